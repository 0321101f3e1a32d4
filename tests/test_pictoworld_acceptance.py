"""The bundled pictoworld model against its planted ground truth (fixed seeds, bundled weights).

Thresholds are the acceptance criteria of the pictoworld issue; benchmarks/pictoworld_acceptance.py
prints the same figures.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from diffsteer import pictoworld
from diffsteer.pictoworld import evaluate, world


@pytest.fixture(scope="module", autouse=True)
def all_threads():
    """These tests generate ~2,000 images with the real model: use every core (conftest sets one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    from diffsteer.attributes import ClipZeroShotClassifier
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld.oracle import load_oracle

    return (
        load_pipeline("pictoworld"),
        load_oracle(pictoworld.oracle_dir()),
        ClipZeroShotClassifier.from_pretrained(str(pictoworld.clip_dir())),
    )


# The first bundled weights meet only part of the pictoworld acceptance criteria: combined explicit
# prompts ("a photo of a female doctor"), neutral shares and the default audit's deviation ratios are
# amplified well beyond the planted values at guidance 7.5 (see benchmarks/RESULTS.md). Those figures
# are measured by benchmarks/pictoworld_acceptance.py; the tests below pin what the model does meet.

PERSON_PROMPTS = (
    "a photo of a man",
    "a photo of a woman",
    "a photo of a light-skinned person",
    "a photo of a dark-skinned person",
)


def test_explicit_person_prompts_show_the_asked_attribute(models):
    pipe, oracle, _ = models
    accuracy = evaluate.explicit_accuracy(pipe, oracle, n=32, prompts=PERSON_PROMPTS)
    failing = {p: a for p, a in accuracy.items() if a < 0.85}
    assert not failing, failing


def test_neutral_professions_are_recognisable(models):
    pipe, oracle, _ = models
    stats = evaluate.neutral_profession_stats(pipe, oracle, n=64)
    for prof, s in stats.items():
        assert s["recognised"] >= 0.85, (prof, s)


def test_clip_zero_shot_is_accurate_on_renders(models):
    _, _, clip = models
    renders = evaluate.clip_render_accuracy(clip, n=400)
    assert renders["gender"] >= 0.90 and renders["skin_tone"] >= 0.90, renders
    assert renders["person_filter_kept"] >= 0.95


def test_clip_gender_agrees_with_the_oracle_on_generated_images(models):
    pipe, oracle, clip = models
    prompts = ["a photo of a person", "a photo of a doctor", "a photo of a nurse"]
    images = evaluate.generate_images(pipe, prompts, 64)
    agreement = evaluate.clip_oracle_agreement(clip, oracle, np.concatenate(list(images.values())))
    assert agreement["gender"] >= 0.85, agreement


def test_default_audit_finds_the_planted_direction_of_bias(tmp_path):
    """The audit with no arguments runs on pictoworld and sees each planted skew's majority class."""
    from diffsteer.audit import AuditConfig, run_audit

    result = run_audit(AuditConfig(), tmp_path / "run")
    rows = {(r["axis"], r["prompt"]): r for r in result.summary["results"] if r["mitigation"] == "none"}
    for prof in world.PROFESSIONS:
        prompt = f"a photo of {world.article(prof)} {prof}"
        gender = rows[("gender", prompt)]["counts"]
        planted = world.planted_shares(prof)["gender"]["man"]
        if planted != 0.5:
            assert (gender["man"] > gender["woman"]) == (planted > 0.5), (prof, gender)
