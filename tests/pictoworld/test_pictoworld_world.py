"""The synthetic world: planted shares, deterministic renders, captions that tell the truth."""

from __future__ import annotations

import numpy as np
import pytest

from diffsteer.pictoworld import world
from diffsteer.pictoworld.render import render


def test_world_has_what_the_audit_needs():
    assert len(world.PROFESSIONS) >= 8
    assert len(world.SKIN_TONES) >= 2 and len(world.CULTURES) >= 2
    controls = [
        p
        for p in world.PROFESSIONS
        if world.planted_deviation_ratio(p, "gender") == 0
        and world.planted_deviation_ratio(p, "skin_tone") == 0
    ]
    assert len(controls) >= 2
    skewed_gender = [p for p in world.PROFESSIONS if world.planted_deviation_ratio(p, "gender") >= 0.6]
    skewed_skin = [p for p in world.PROFESSIONS if world.planted_deviation_ratio(p, "skin_tone") >= 0.5]
    assert len(skewed_gender) >= 4 and len(skewed_skin) >= 2


def test_doctor_deviation_ratio_matches_planted_share():
    assert world.planted_deviation_ratio("doctor", "gender") == pytest.approx(0.7)


def test_sampled_people_follow_planted_shares():
    rng = np.random.default_rng(1)
    scenes = [world.sample_person(rng, "nurse") for _ in range(4000)]
    share = np.mean([s.gender == "man" for s in scenes])
    assert share == pytest.approx(0.15, abs=0.02)


def test_neutral_captions_do_not_depend_on_attributes():
    rng = np.random.default_rng(2)
    men = [
        world.caption_for(world.Scene(profession="doctor", gender="man", skin="light"), rng).text
        for _ in range(3000)
    ]
    women = [
        world.caption_for(world.Scene(profession="doctor", gender="woman", skin="light"), rng).text
        for _ in range(3000)
    ]
    neutral = "a photo of a doctor"
    assert np.mean([t == neutral for t in men]) == pytest.approx(
        np.mean([t == neutral for t in women]), abs=0.03
    )


def test_captions_are_true_of_their_scene():
    rng = np.random.default_rng(3)
    for scene, caption in world.training_pairs(rng, 500):
        assert world.satisfies(scene, caption.asserts), caption.text
        if scene.gender == "woman":
            assert " male " not in f" {caption.text} " and "a photo of a man" not in caption.text


def test_render_is_deterministic_and_seed_changes_nuisance_only():
    scene = world.Scene(profession="pilot", gender="woman", skin="dark", culture="western")
    a, b = render(scene, 7), render(scene, 7)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(scene, 8))


def test_skin_tone_is_visible_in_pixels():
    light = render(world.Scene(profession="chef", gender="man", skin="light"), 5).astype(int)
    dark = render(world.Scene(profession="chef", gender="man", skin="dark"), 5).astype(int)
    assert np.abs(light - dark).sum() > 0
    assert light.sum() > dark.sum()
