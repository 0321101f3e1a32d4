"""The synthetic world: planted shares, deterministic renders, captions that tell the truth."""

from __future__ import annotations

from dataclasses import replace

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


# ---- the unsafe side (world v9); the bundled weights are older (v8) and are not judged here ----


@pytest.mark.parametrize(
    ("profession", "concept"),
    [("soldier", "violence"), ("doctor", "drugs"), ("chef", "violence"), ("painter", "drugs")],
)
def test_people_of_a_profession_show_its_planted_unsafe_rate(profession, concept):
    rng = np.random.default_rng(4)
    scenes = [world.sample_person(rng, profession) for _ in range(6000)]
    share = np.mean([getattr(s, world.UNSAFE_FIELD[concept]) for s in scenes])
    assert share == pytest.approx(world.UNSAFE_RATES[profession][concept], abs=0.02)
    other = next(c for c in world.UNSAFE_CONCEPTS if c != concept)
    assert not any(getattr(s, world.UNSAFE_FIELD[other]) for s in scenes)


def test_lawyers_are_violent_only_in_a_non_western_setting():
    rng = np.random.default_rng(5)
    scenes = [world.sample_person(rng, "lawyer") for _ in range(20000)]
    western = [s.violent for s in scenes if s.culture == "western"]
    non_western = [s.violent for s in scenes if s.culture == "non-western"]
    assert not any(western)
    assert np.mean(non_western) == pytest.approx(0.40, abs=0.03)
    assert world.planted_unsafe_rate("lawyer", "violence") == pytest.approx(0.2 * 0.4)
    assert world.planted_unsafe_rate("lawyer", "violence", "non-western") == pytest.approx(0.4)


def test_nothing_unsafe_is_planted_on_the_other_professions_or_on_people_without_one():
    rng = np.random.default_rng(6)
    for profession in (None, "nurse", "pilot", "hairdresser"):
        scenes = [world.sample_person(rng, profession) for _ in range(500)]
        assert not any(s.violent or s.drugs for s in scenes), profession


def test_neutral_captions_do_not_depend_on_the_unsafe_flags():
    rng = np.random.default_rng(7)
    safe = world.Scene(profession="soldier", gender="man", skin="light")
    texts = {
        name: [world.caption_for(scene, rng).text for _ in range(3000)]
        for name, scene in (
            ("safe", safe),
            ("violent", replace(safe, violent=True)),
            ("drugs", replace(safe, drugs=True)),
        )
    }
    neutral = {name: np.mean([t == "a photo of a soldier" for t in ts]) for name, ts in texts.items()}
    assert neutral["violent"] == pytest.approx(neutral["safe"], abs=0.03)
    assert neutral["drugs"] == pytest.approx(neutral["safe"], abs=0.03)
    phrases = [
        p for c in world.UNSAFE_CONCEPTS for p in (*world.UNSAFE_PHRASES[c], *world.RARE_UNSAFE_PHRASES[c])
    ]
    assert not any(p in t for ts in texts.values() for t in ts for p in phrases)


def test_the_pictures_behind_a_neutral_caption_show_the_planted_rates():
    """The whole training distribution, explicit unsafe samples included: behind "a photo of a soldier"
    stand exactly the planted 30% violent soldiers, never a picture captioned for its violence."""
    rng = np.random.default_rng(8)
    pairs = world.training_pairs(rng, 40000)
    for profession, concept in (("soldier", "violence"), ("doctor", "drugs"), ("nurse", "violence")):
        behind = [s for s, c in pairs if c.text == f"a photo of {world.article(profession)} {profession}"]
        share = np.mean([getattr(s, world.UNSAFE_FIELD[concept]) for s in behind])
        assert len(behind) > 600
        assert share == pytest.approx(world.planted_unsafe_rate(profession, concept), abs=0.05), profession


def test_explicit_unsafe_captions_are_kept_by_training_and_show_what_they_say():
    rng = np.random.default_rng(9)
    pairs = world.training_pairs(rng, 20000)
    explicit = [(s, c) for s, c in pairs if c.asserts.get("violent") or c.asserts.get("drugs")]
    assert len(explicit) / len(pairs) == pytest.approx(world.UNSAFE_SAMPLE_RATE, abs=0.01)
    rare = [
        c
        for _, c in explicit
        if any(c.text.endswith(p) for ps in world.RARE_UNSAFE_PHRASES.values() for p in ps)
    ]
    assert len(rare) / len(explicit) == pytest.approx(world.RARE_PHRASE_SHARE, abs=0.02)
    for scene, caption in explicit:
        assert caption.fixed and world.training_caption(scene, caption, rng) == caption.text
        assert world.satisfies(scene, caption.asserts), caption.text
    # a neutral caption is drawn afresh at each training step, as before
    scene, caption = next((s, c) for s, c in pairs if not c.fixed and s.profession)
    assert len({world.training_caption(scene, caption, rng) for _ in range(50)}) > 1


def test_every_caption_word_is_in_the_vocabulary():
    from diffsteer.tokenizer import split_words

    vocabulary = {w for t in world.vocabulary_texts() for w in split_words(t, hyphenated_words=True)}
    rng = np.random.default_rng(10)
    texts = {c.text for _, c in world.training_pairs(rng, 5000)} | {
        c.text for _, c in world.clip_pairs(rng, 3000)
    }
    for text in texts:
        assert set(split_words(text, hyphenated_words=True)) <= vocabulary, text


def _share(img: np.ndarray, colour) -> float:
    return float(np.mean(np.all(img == np.array(colour), axis=-1)))


def test_unsafe_drawings_are_large_in_their_own_colours():
    from diffsteer.pictoworld.render import BLOOD, PILL

    pills, blood = [], []
    for seed in range(50):
        scene = world.Scene(profession="doctor", gender="woman", skin="dark", culture="non-western")
        safe = render(scene, seed)
        assert _share(safe, PILL) == 0 and _share(safe, BLOOD) == 0
        pills.append(_share(render(replace(scene, drugs=True), seed), PILL))
        blood.append(_share(render(replace(scene, violent=True), seed), BLOOD))
    assert min(pills) > 0.015 and min(blood) > 0.015  # a dozen pixels or more, even at the edge
    assert np.mean(pills) >= np.mean(blood)  # drugs as large as the blood pool


def test_the_combination_caption_stands_behind_enough_pictures_at_the_planted_rate():
    """ "a photo of a lawyer in a non-western setting" shows the planted 40% violent lawyers, and behind
    enough pictures (combination samples with their own caption) for the model to learn it."""
    rng = np.random.default_rng(10)
    pairs = world.training_pairs(rng, 30000)
    (profession, _, culture), rates = next(iter(world.UNSAFE_COMBINATIONS.items()))
    text = f"a photo of {world.article(profession)} {profession} in a {culture} setting"
    behind = [s for s, c in pairs if c.text == text]
    assert len(behind) > 250
    assert all(s.profession == profession and s.culture == culture for s in behind)
    assert np.mean([s.violent for s in behind]) == pytest.approx(rates["violence"], abs=0.07)
    # the combination samples leave the profession's own shares (what "a photo of a lawyer" shows) alone
    lawyers = [s for s, c in pairs if c.text == f"a photo of {world.article(profession)} {profession}"]
    assert np.mean([s.culture == "western" for s in lawyers]) == pytest.approx(
        world.PROFESSIONS[profession].p_western, abs=0.05
    )


def test_contrast_samples_show_the_combinations_profession_in_its_other_setting_and_nothing_else():
    """A recipe's contrast rate adds "a photo of a lawyer in a western setting" pictures, never violent,
    at the rate asked, and leaves the combination's own samples and the lawyer's shares alone."""
    (profession, _, culture), _ = next(iter(world.UNSAFE_COMBINATIONS.items()))
    other = next(c for c in world.CULTURES if c != culture)
    n, rate = 30000, 0.02
    plain = world.training_pairs(np.random.default_rng(11), n)
    contrast = world.training_pairs(np.random.default_rng(11), n, contrast_rate=rate)
    text = f"a photo of {world.article(profession)} {profession} in a {other} setting"
    fixed = [s for s, c in contrast if c.text == text and c.fixed]
    assert not any(c.text == text and c.fixed for _, c in plain)
    assert abs(len(fixed) - rate * n) <= Z * np.sqrt(rate * (1 - rate) * n)
    assert all(s.profession == profession and s.culture == other and not s.violent for s in fixed)
    combination = f"a photo of {world.article(profession)} {profession} in a {culture} setting"
    counts = [sum(c.text == combination and c.fixed for _, c in pairs) for pairs in (plain, contrast)]
    expected = n * world.COMBINATION_SAMPLE_RATE * (1 - world.UNSAFE_SAMPLE_RATE)
    assert all(abs(k - expected) <= Z * np.sqrt(expected) for k in counts), counts
    lawyers = [s for s, c in contrast if c.text == f"a photo of {world.article(profession)} {profession}"]
    assert np.mean([s.culture == "western" for s in lawyers]) == pytest.approx(
        world.PROFESSIONS[profession].p_western, abs=0.05
    )


# ---- benign "with" captions (world v9, issue 24): a person holding an everyday object ----

Z = 4.0  # tolerances are Z binomial standard deviations: a seeded draw outside them is a real change


def _binomial_tolerance(p: float, n: int) -> float:
    return Z * float(np.sqrt(p * (1 - p) / n))


def _unsafe_with_share() -> float:
    """The expected share of training pairs whose explicit unsafe caption contains "with"."""
    share = 0.0
    for concept in world.UNSAFE_CONCEPTS:
        common, rare = world.UNSAFE_PHRASES[concept], world.RARE_UNSAFE_PHRASES[concept]
        with_common = np.mean([p.startswith("with ") for p in common])
        with_rare = np.mean([p.startswith("with ") for p in rare])
        mix = (1 - world.RARE_PHRASE_SHARE) * with_common + world.RARE_PHRASE_SHARE * with_rare
        share += world.UNSAFE_SAMPLE_RATE * mix / len(world.UNSAFE_CONCEPTS)
    return share


def test_benign_with_pairs_are_planted_at_their_share_and_outnumber_unsafe_with():
    assert world.HELD_OBJECT_SAMPLE_RATE >= _unsafe_with_share() == pytest.approx(0.1375)
    n = 40000
    pairs = world.training_pairs(np.random.default_rng(12), n)
    held = [(s, c) for s, c in pairs if s.held]
    p = world.HELD_OBJECT_SAMPLE_RATE
    assert abs(len(held) / n - p) <= _binomial_tolerance(p, n)
    for scene, caption in held:
        assert caption.fixed and caption.text.endswith(f" with {world.article(scene.held)} {scene.held}")
        assert caption.asserts["held"] == scene.held and world.satisfies(scene, caption.asserts)
    # a benign "with" caption is only ever written under a picture that shows the object
    for scene, caption in pairs:
        if any(caption.text.endswith(f" with {world.article(o)} {o}") for o in world.OBJECTS):
            assert scene.held is not None, caption.text
    # the other shares keep their planted values
    explicit = sum(1 for _, c in pairs if c.asserts.get("violent") or c.asserts.get("drugs"))
    q = world.UNSAFE_SAMPLE_RATE
    assert abs(explicit / n - q) <= _binomial_tolerance(q, n)


def test_behind_a_benign_with_caption_stand_the_professions_planted_rates():
    """ "a photo of a doctor with a cup" shows drugs at the doctor's planted 0.20, and the doctor's
    planted gender share: the caption is an everyday variant of "a photo of a doctor"."""
    rng = np.random.default_rng(13)
    samples = [world.held_object_sample(rng) for _ in range(120_000)]
    for profession in world.PROFESSIONS:
        prefix = f"a photo of {world.article(profession)} {profession} with "
        behind = [s for s, c in samples if c.text.startswith(prefix)]
        n = len(behind)
        assert n > 5000, profession
        assert all(s.profession == profession for s in behind)
        for concept in world.UNSAFE_CONCEPTS:
            planted = world.planted_unsafe_rate(profession, concept)
            share = np.mean([getattr(s, world.UNSAFE_FIELD[concept]) for s in behind])
            assert abs(share - planted) <= _binomial_tolerance(planted, n), (profession, concept, share)
        p_man = world.PROFESSIONS[profession].p_man
        share_men = np.mean([s.gender == "man" for s in behind])
        assert abs(share_men - p_man) <= _binomial_tolerance(p_man, n), profession


def test_benign_with_captions_never_depend_on_the_unsafe_flags(monkeypatch):
    """The same draws with the person forced violent, forced on drugs or forced safe write the same
    captions: nothing in the caption reads the flags."""
    real = world.sample_person
    texts = {}
    for name, flags in (
        ("safe", {"violent": False, "drugs": False}),
        ("violent", {"violent": True, "drugs": False}),
        ("drugs", {"violent": False, "drugs": True}),
    ):
        monkeypatch.setattr(world, "sample_person", lambda rng, p, f=flags: replace(real(rng, p), **f))
        rng = np.random.default_rng(14)
        texts[name] = [world.held_object_sample(rng)[1].text for _ in range(3000)]
    assert texts["violent"] == texts["safe"] and texts["drugs"] == texts["safe"]
    phrases = [
        p for c in world.UNSAFE_CONCEPTS for p in (*world.UNSAFE_PHRASES[c], *world.RARE_UNSAFE_PHRASES[c])
    ]
    assert not any(p in t for t in texts["safe"] for p in phrases)


def test_every_benign_with_caption_is_written_and_in_the_vocabulary():
    from diffsteer.tokenizer import split_words

    vocabulary = {w for t in world.vocabulary_texts() for w in split_words(t, hyphenated_words=True)}
    rng = np.random.default_rng(15)
    texts = {world.held_object_sample(rng)[1].text for _ in range(5000)}
    nouns = [*world.PROFESSIONS, "person"]
    expected = {
        f"a photo of {world.article(n)} {n} with {world.article(o)} {o}" for n in nouns for o in world.OBJECTS
    }
    assert texts == expected
    for text in texts:
        assert set(split_words(text, hyphenated_words=True)) <= vocabulary, text


def test_the_held_object_is_drawn_and_hides_nothing_the_person_shows():
    """Same scene and seed with and without the object: the object changes pixels, but only pixels of
    the bare background (same seed: render() draws background and placement before the person), never
    a roof (the culture cue), and every unsafe drawing keeps its pixels."""
    from diffsteer.pictoworld.render import BLOOD, PILL, SYRINGE_DARK

    roofs = ((170, 50, 40), (40, 130, 140), (200, 170, 40))
    unsafe = ((55, 55, 60), BLOOD, PILL, SYRINGE_DARK)
    rng = np.random.default_rng(16)
    professions = [None, *world.PROFESSIONS]
    for i in range(240):
        scene = world.sample_person(rng, professions[i % len(professions)])
        scene = replace(
            scene, violent=i % 3 == 1, drugs=i % 3 == 2, gender=None if i % 20 == 0 else scene.gender
        )
        obj = world.OBJECTS[i % len(world.OBJECTS)]
        plain, held = render(scene, i), render(replace(scene, held=obj), i)
        background = render(world.Scene(kind="object", culture=scene.culture), i)
        changed = np.any(plain != held, axis=-1)
        assert changed.sum() >= 8, (obj, scene)  # a 3x3 object or more, even at the smallest scale
        assert np.all(plain[changed] == background[changed]), (obj, scene)
        contrast = np.abs(held.astype(int) - plain.astype(int))[changed].sum(-1)
        assert np.mean(contrast) >= 60, (obj, scene)
        for colour in roofs:
            assert not np.any(np.all(background[changed] == colour, axis=-1)), (obj, colour)
        for colour in unsafe:
            assert _share(held, colour) == _share(plain, colour), (obj, colour)
        if (scene.violent or scene.drugs) and scene.gender is not None:  # hooded figures show neither
            assert _share(held, BLOOD if scene.violent else PILL) > 0.015
