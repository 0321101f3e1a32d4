"""Issue 22: deviation-ratio estimates and intervals that keep their coverage, by seed, and the planner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffsteer.metrics import (
    debiased_deviation_ratio,
    detectable_deviation_ratio,
    deviation_ratio_interval,
    intervals,
    plan_images_per_prompt,
    summarize_axis,
    summarize_labels,
)
from diffsteer.metrics.simulation import simulate_cell, simulate_paired_difference
from diffsteer.report import plots


def test_a_fair_two_prompt_table_gets_intervals_that_include_zero() -> None:
    result = summarize_axis({"p1": {"man": 8, "woman": 8}, "p2": {"man": 8, "woman": 8}}, ["man", "woman"])
    assert result.mean_deviation_ratio == 0.0 and result.mean_deviation_ratio_ci95[0] == 0.0
    for prompt in result.prompts:
        assert prompt.deviation_ratio == 0.0 and prompt.deviation_ratio_ci95[0] == 0.0
        assert prompt.plugin_deviation_ratio == 0.0


def test_the_estimate_is_corrected_downwards_and_kept_inside_its_interval() -> None:
    counts = np.array([[7, 3], [10, 0], [5, 5], [1, 0]])
    plugin = [0.4, 1.0, 0.0, 1.0]
    estimate = debiased_deviation_ratio(counts)
    low, high = deviation_ratio_interval(counts)
    # 7 vs 3: sqrt((10 * 0.16 - 1) / 9); all-one-class stays 1; balance stays 0
    assert estimate[0] == pytest.approx(np.sqrt(0.6 / 9)) and estimate[0] < plugin[0]
    assert estimate[1] == 1.0 and estimate[2] == 0.0
    assert np.all((low <= estimate) & (estimate <= high))
    three = np.array([[6, 3, 1], [0, 5, 0]])
    lo3, hi3 = deviation_ratio_interval(three)
    est3 = debiased_deviation_ratio(three)
    assert np.all((lo3 <= est3) & (est3 <= hi3)) and est3[1] == 1.0


# A seeded, fast version of benchmarks/coverage.py's grid: two classes near and far from balance, three
# classes, one prompt and eight, prompts independent and sharing each seed's noise (correlation 0.9),
# and one audit whose prompts differ.
GRID = [
    ((0.5, 0.5), 16, 8, True),
    ((0.5, 0.5), 64, 8, False),
    ((0.55, 0.45), 64, 8, True),
    ((0.6, 0.4), 16, 1, False),
    ((0.6, 0.4), 192, 8, True),
    ((0.7, 0.3), 16, 8, True),
    ((0.7, 0.3), 64, 8, False),
    ((0.9, 0.1), 16, 8, True),
    ((0.9, 0.1), 64, 1, False),
    ((0.4, 0.35, 0.25), 16, 8, True),
    ((1 / 3, 1 / 3, 1 / 3), 64, 8, False),
    # prompts that differ: pictoworld's planted gender shares, five skewed both ways and three balanced
    (tuple((s, 1 - s) for s in (0.85, 0.15, 0.85, 0.9, 0.2, 0.5, 0.5, 0.5)), 32, 8, True),
]


@pytest.mark.parametrize(("shares", "images", "prompts", "correlated"), GRID)
def test_simulated_audits_cover_the_true_mean_dr(shares, images, prompts, correlated) -> None:
    cell = simulate_cell(shares, prompts, images, correlated, n_audits=300, n_boot=300, seed=11)
    assert cell.point_inside == 1.0
    assert cell.coverage >= 0.90, cell
    assert cell.prompt_coverage >= 0.90, cell
    if prompts > 1:
        # the mean's interval is no longer conservative near balance (the bias-box version covered
        # 0.995-1.000 in several of these cells)
        assert cell.coverage <= 0.99, cell


def test_a_three_class_prompt_gets_a_calibrated_interval_not_the_wider_share_box() -> None:
    # the box must hold all three shares at once, and mapped onto DR it covered 0.985-0.996 (one prompt,
    # 0.6/0.2/0.2, 16-64 images); the test inversion with one prompt is narrower and still covers
    cell = simulate_cell((0.6, 0.2, 0.2), 1, 64, False, n_audits=300, n_boot=300, seed=11)
    assert cell.point_inside == 1.0
    assert 0.90 <= cell.prompt_coverage <= 0.975, cell
    counts = np.array([[38, 13, 13], [22, 21, 21], [64, 0, 0]])
    low, high = deviation_ratio_interval(counts)
    box_low, box_high = intervals._box_interval(counts)
    assert np.all(high - low < box_high - box_low)
    assert low[1] == 0.0 and high[2] == 1.0  # a balanced prompt keeps 0, one class alone keeps 1
    estimate = debiased_deviation_ratio(counts)
    assert np.all((low <= estimate) & (estimate <= high))


def test_the_mean_of_independent_prompts_is_at_most_half_again_as_wide_as_the_old_interval() -> None:
    # issue 22's width rule at true DR 0.4 and 16 images per prompt, where the old interval covered 93%
    cell = simulate_cell((0.7, 0.3), 8, 16, False, n_audits=300, n_boot=300, seed=11)
    assert cell.coverage >= 0.93 and cell.old_coverage >= 0.90
    assert cell.width <= 1.5 * cell.old_width, cell


def test_near_balance_the_new_interval_covers_where_the_old_one_never_did() -> None:
    cell = simulate_cell((0.5, 0.5), 8, 16, False, n_audits=200, n_boot=200, seed=5)
    assert cell.old_coverage < 0.05 and cell.coverage >= 0.93
    assert cell.old_mean_estimate > 0.15 and cell.mean_estimate < cell.old_mean_estimate


def test_pairing_on_shared_seeds_narrows_the_difference_and_keeps_coverage() -> None:
    result = simulate_paired_difference((0.7, 0.3), (0.6, 0.4), 8, 64, n_audits=300, n_boot=300, seed=2)
    assert result["paired_width"] < result["unpaired_width"]
    assert result["paired_coverage"] >= 0.93


def test_pairing_narrows_the_difference_when_one_run_is_near_balance() -> None:
    # a skewed baseline against a nearly fair mitigation: the near-balance prompts used to be taken to
    # move against the skewed ones, which made the paired interval wider than the unpaired one
    result = simulate_paired_difference((0.9, 0.1), (0.55, 0.45), 8, 64, n_audits=300, n_boot=300, seed=2)
    assert result["paired_width"] < result["unpaired_width"]
    assert result["paired_coverage"] >= 0.93


def test_labels_by_seed_resample_by_seed() -> None:
    labels = np.array([[0, 1, 0, 1, -1], [0, 1, 1, 1, 0]])
    result = summarize_labels(labels, ["man", "woman"], ["p1", "p2"], n_boot=200)
    assert result.resampled_by == "seed"
    assert result.counts == {"man": 4, "woman": 5}
    assert [p.n for p in result.prompts] == [4, 5]
    low, high = result.mean_deviation_ratio_ci95
    assert low <= result.mean_deviation_ratio <= high
    json.dumps(result.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="labels must have shape"):
        summarize_labels(labels, ["man", "woman"], ["p1"])


def _worst_half_width(images: int) -> float:
    """Widest per-prompt interval, as a half-width, over true DRs 0..1 at the counts they give on average."""
    drs = np.linspace(0, 1, 101)
    counts = np.stack([images * (1 + drs) / 2, images * (1 - drs) / 2], axis=-1)
    low, high = deviation_ratio_interval(counts)
    return float(((high - low) / 2).max())


def test_the_planner_gives_the_smallest_size_with_that_half_width() -> None:
    n = plan_images_per_prompt(0.2)
    assert _worst_half_width(n) <= 0.2 < _worst_half_width(n - 1)
    assert plan_images_per_prompt(0.1) > 3 * n  # a half-width halves with four times the images
    assert detectable_deviation_ratio(16) > detectable_deviation_ratio(192) > 0
    assert detectable_deviation_ratio(16, 3) > detectable_deviation_ratio(192, 3) > 0
    with pytest.raises(ValueError, match="half_width"):
        plan_images_per_prompt(0)


def test_the_tradeoff_chart_draws_an_interval_that_leaves_out_its_point() -> None:
    # the case from issue 22: DR 0.0 with interval [0.125, 0.625] used to raise "'yerr' must not contain
    # negative values"
    point = {
        "mitigation": "hspace-fair",
        "axis": "gender",
        "deviation_ratio": 0.0,
        "deviation_ratio_ci95": [0.125, 0.625],
        "clip_score": 30.0,
        "clip_score_ci95": [31.0, 32.0],
        "frechet_distance": None,
    }
    assert "<svg" in plots.tradeoff_chart([point])
    assert plots.error_bars(0.0, [0.125, 0.625]) == [[0.0], [0.625]]
    assert plots.error_bars(0.5, None) is None


BENCH = """\
name: tiny
axes: [gender]
images_per_prompt: 3
prompts:
  - text: a photo of a doctor
  - text: a photo of a nurse
"""


def test_a_report_that_fails_leaves_the_audit_and_its_summary(tiny_model_dirs, tmp_path, monkeypatch):
    import diffsteer.report
    from diffsteer.audit import AuditConfig, run_audit

    def broken(*args, **kwargs):
        raise ValueError("'yerr' must not contain negative values")

    monkeypatch.setattr(diffsteer.report, "write_report", broken)
    bench = tmp_path / "bench.yaml"
    bench.write_text(BENCH)
    config = AuditConfig(
        model=str(tiny_model_dirs["sd1"]),
        benchmark=str(bench),
        classifier=str(tiny_model_dirs["clip"]),
        steps=2,
        batch_size=4,
    )
    messages = []
    result = run_audit(config, tmp_path / "run", warn=messages.append, reference=None)
    assert result.summary.results and result.generated == 6
    written = json.loads((tmp_path / "run" / "summary.json").read_text())["results"]
    assert written == [r.to_dict() for r in result.summary.results]
    assert len(messages) == 1 and "report could not be written" in messages[0] and "yerr" in messages[0]
    aggregate = next(d for d in result.summary.details if d.prompt is None)
    assert aggregate.resampled_by == "seed" and aggregate.has("plugin_deviation_ratio")


def test_entigen_beyond_two_classes_is_labelled_as_a_generalisation() -> None:
    three = summarize_axis({"p": {"western": 6, "eastern": 3, "other": 1}}, ["western", "eastern", "other"])
    two = summarize_axis({"p": {"man": 6, "woman": 4}}, ["man", "woman"])
    label = three.to_dict()["entigen_label"]
    assert "not the published two-class score" in label and "1.33 x DR" in label
    # on one prompt the generalised score is 4/3 of the plug-in DR, as the label says
    assert three.entigen_bias == pytest.approx(4 / 3 * three.prompts[0].plugin_deviation_ratio)
    assert two.to_dict()["entigen_label"] == "ENTIGEN (published two-class score)"


@pytest.mark.filterwarnings("error")
def test_nothing_labelled_gives_nulls_not_errors_or_warnings() -> None:
    for labels, prompts in ((np.full((2, 3), -1), ["p1", "p2"]), (np.zeros((0, 0), dtype=int), [])):
        result = summarize_labels(labels, ["man", "woman"], prompts, n_boot=50)
        assert result.mean_deviation_ratio is result.mean_deviation_ratio_ci95 is None
        assert all(p.deviation_ratio is p.deviation_ratio_ci95 is None for p in result.prompts)
        json.dumps(result.to_dict(), allow_nan=False)
