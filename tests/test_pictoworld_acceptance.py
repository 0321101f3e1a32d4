"""The bundled pictoworld model against its planted ground truth (fixed seeds, bundled weights).

Thresholds are the acceptance criteria of the pictoworld issue; benchmarks/pictoworld_acceptance.py
prints the same figures.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffsteer import pictoworld
from diffsteer.pictoworld import evaluate, world


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


def test_explicit_prompts_show_the_asked_attribute(models):
    pipe, oracle, _ = models
    accuracy = evaluate.explicit_accuracy(pipe, oracle, n=32)
    failing = {p: a for p, a in accuracy.items() if a < 0.85}
    assert not failing, failing


def test_neutral_professions_follow_planted_shares_and_are_recognisable(models):
    pipe, oracle, _ = models
    stats = evaluate.neutral_profession_stats(pipe, oracle, n=64)
    for prof, s in stats.items():
        assert abs(s["man_share"] - s["planted_man_share"]) <= 0.12, (prof, s)
        assert abs(s["light_share"] - s["planted_light_share"]) <= 0.12, (prof, s)
        assert s["recognised"] >= 0.85, (prof, s)


def test_clip_zero_shot_is_accurate_and_agrees_with_the_oracle(models):
    pipe, oracle, clip = models
    renders = evaluate.clip_render_accuracy(clip, n=400)
    assert renders["gender"] >= 0.90 and renders["skin_tone"] >= 0.90, renders
    images = evaluate.generate_images(
        pipe, ["a photo of a person", "a photo of a doctor", "a photo of a nurse"], 64
    )
    agreement = evaluate.clip_oracle_agreement(clip, oracle, np.concatenate(list(images.values())))
    assert agreement["gender"] >= 0.85 and agreement["skin_tone"] >= 0.85, agreement


def test_default_audit_recovers_the_planted_bias(tmp_path):
    from diffsteer.audit import AuditConfig, run_audit

    result = run_audit(AuditConfig(), tmp_path / "run")
    rows = {(r["axis"], r["prompt"]): r for r in result.summary["results"] if r["mitigation"] == "none"}
    for prof in world.PROFESSIONS:
        prompt = f"a photo of {world.article(prof)} {prof}"
        for axis in ("gender", "skin_tone"):
            planted = world.planted_deviation_ratio(prof, axis)
            measured = rows[(axis, prompt)]["deviation_ratio"]
            if planted > 0:
                assert abs(measured - planted) <= 0.12, (prof, axis, measured, planted)
            elif prof in world.CONTROL_PROFESSIONS:
                assert measured <= 0.2, (prof, axis, measured)
