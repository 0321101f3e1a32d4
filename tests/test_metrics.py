"""Bias metrics against hand-computed values, and bootstrap interval behaviour."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from diffsteer.metrics import (
    AxisMetrics,
    bootstrap_interval,
    deviation_ratio,
    entigen_bias,
    kl_to_target,
    mean_deviation_ratio,
    mean_kl_to_target,
    resample_counts,
    summarize_axis,
)

# KL of shares (0.7, 0.3) to uniform (0.5, 0.5), in nats: 0.7 ln 1.4 + 0.3 ln 0.6 = 0.082283.
KL_73 = 0.7 * math.log(1.4) + 0.3 * math.log(0.6)


def _dr_stat(b: np.ndarray) -> np.ndarray:
    return deviation_ratio(b[:, 0, :])


# --- two classes ---------------------------------------------------------------------------------------


def test_two_classes_seven_men_three_women() -> None:
    # Shares 0.7/0.3: DR = |0.7 - 0.5| / (1 - 0.5) = 0.4; ENTIGEN = |7 - 3| / 10 = 0.4.
    assert deviation_ratio([7, 3]) == pytest.approx(0.4)
    assert entigen_bias([[7, 3]]) == pytest.approx(0.4)
    assert kl_to_target([7, 3]) == pytest.approx(KL_73)
    assert KL_73 == pytest.approx(0.0822828, abs=1e-7)


def test_entigen_two_prompts_weighs_by_images_while_mean_dr_weighs_prompts() -> None:
    # Prompt 1: 7/3 (DR 0.4). Prompt 2: 1/4 (shares 0.2/0.8, DR |0.2-0.5|/0.5 = 0.6).
    # ENTIGEN = (|7-3| + |1-4|) / (10 + 5) = 7/15; mean DR = (0.4 + 0.6) / 2 = 0.5.
    counts = np.array([[7, 3], [1, 4]])
    assert entigen_bias(counts) == pytest.approx(7 / 15)
    assert mean_deviation_ratio(counts) == pytest.approx(0.5)
    # Balanced prompts score zero on every metric.
    assert entigen_bias([[5, 5], [2, 2]]) == 0.0
    assert mean_deviation_ratio([[5, 5], [2, 2]]) == 0.0
    assert mean_kl_to_target([[5, 5], [2, 2]]) == 0.0


def test_entigen_generalisation_equals_paper_formula_for_two_classes() -> None:
    counts = np.array([[9, 1], [4, 6], [0, 3]])
    paper = np.abs(counts[:, 0] - counts[:, 1]).sum() / counts.sum()  # (8 + 2 + 3) / 23
    assert entigen_bias(counts) == pytest.approx(13 / 23)
    assert entigen_bias(counts) == pytest.approx(paper)


# --- three classes -------------------------------------------------------------------------------------


def test_three_classes_by_hand() -> None:
    # Counts 6/3/1, N = 10, shares 0.6/0.3/0.1, uniform 1/3.
    # DR = max |p - 1/3| / (2/3) = (0.6 - 1/3) / (2/3) = (4/15) / (2/3) = 0.4.
    # ENTIGEN = (|6 - 10/3| + |3 - 10/3| + |1 - 10/3|) / 10 = (8/3 + 1/3 + 7/3) / 10 = 8/15.
    # KL = 0.6 ln 1.8 + 0.3 ln 0.9 + 0.1 ln 0.3 = 0.352672 - 0.031608 - 0.120397 = 0.200667.
    assert deviation_ratio([6, 3, 1]) == pytest.approx(0.4)
    assert entigen_bias([[6, 3, 1]]) == pytest.approx(8 / 15)
    assert kl_to_target([6, 3, 1]) == pytest.approx(0.200667, abs=1e-6)


# --- extremes and empty input --------------------------------------------------------------------------


def test_all_images_in_one_class() -> None:
    assert deviation_ratio([10, 0]) == 1.0
    assert entigen_bias([[10, 0], [0, 4]]) == 1.0
    assert kl_to_target([10, 0]) == pytest.approx(math.log(2))
    # Three classes: DR still 1, KL = ln 3, ENTIGEN reaches its C=3 maximum 2 (C-1)/C = 4/3.
    assert deviation_ratio([0, 5, 0]) == 1.0
    assert kl_to_target([0, 5, 0]) == pytest.approx(math.log(3))
    assert entigen_bias([[0, 5, 0]]) == pytest.approx(4 / 3)


def test_empty_prompt_is_nan_and_skipped_by_means() -> None:
    counts = np.array([[7, 3], [0, 0]])
    dr = deviation_ratio(counts)
    assert dr[0] == pytest.approx(0.4)
    assert math.isnan(dr[1])
    assert math.isnan(kl_to_target([0, 0]))
    assert mean_deviation_ratio(counts) == pytest.approx(0.4)
    assert mean_kl_to_target(counts) == pytest.approx(KL_73)
    assert entigen_bias(counts) == pytest.approx(0.4)


def test_everything_empty_is_nan() -> None:
    for counts in (np.zeros((3, 2)), np.zeros((0, 2))):
        assert math.isnan(mean_deviation_ratio(counts))
        assert math.isnan(mean_kl_to_target(counts))
        assert math.isnan(entigen_bias(counts))


def test_fewer_than_two_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        deviation_ratio([5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        entigen_bias([[5], [3]])
    with pytest.raises(ValueError, match="at least 2 classes"):
        summarize_axis({"a doctor": {"man": 3}}, classes=["man"])


def test_invalid_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        deviation_ratio([3, -1])
    with pytest.raises(ValueError, match=r"\(\.\.\., P, C\)"):
        entigen_bias([7, 3])


def test_leading_dimensions_are_replicates() -> None:
    # Two replicates x two prompts: each replicate gets its own aggregate.
    counts = np.array([[[7, 3], [1, 4]], [[5, 5], [0, 0]]])
    np.testing.assert_allclose(entigen_bias(counts), [7 / 15, 0.0])
    np.testing.assert_allclose(mean_deviation_ratio(counts), [0.5, 0.0])
    assert deviation_ratio(counts).shape == (2, 2)


# --- KL target -----------------------------------------------------------------------------------------


def test_kl_uniform_vs_given_target() -> None:
    # Matching the target exactly gives 0 even though the shares are far from uniform.
    assert kl_to_target([7, 3], target=[0.7, 0.3]) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_target([7, 3], target=None) == pytest.approx(KL_73)
    # Balanced 5/5 against target 0.8/0.2: 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2) = 0.5 ln(1.5625) = ln 1.25.
    assert kl_to_target([5, 5], target=[0.8, 0.2]) == pytest.approx(math.log(1.25))
    # Mean over prompts 5/5 and 7/3 against 0.7/0.3: (0.5 ln(0.5/0.7) + 0.5 ln(0.5/0.3) + 0) / 2
    # = 0.25 ln(0.25 / 0.21) = 0.043588.
    assert mean_kl_to_target([[5, 5], [7, 3]], target=[0.7, 0.3]) == pytest.approx(0.043588, abs=1e-6)


@pytest.mark.parametrize(
    ("target", "message"),
    [([0.6, 0.6], "sum to 1"), ([0.5, 0.3, 0.2], "one probability per class"), ([1.0, 0.0], "> 0")],
)
def test_invalid_target_is_rejected(target: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        kl_to_target([7, 3], target=target)


# --- bootstrap -----------------------------------------------------------------------------------------


def test_bootstrap_keeps_each_prompts_image_count() -> None:
    counts = np.array([[7, 3], [0, 5], [0, 0]])
    samples = resample_counts(counts, n_boot=300, seed=1)
    assert samples.shape == (300, 3, 2)
    np.testing.assert_array_equal(samples.sum(axis=2), np.broadcast_to([10, 5, 0], (300, 3)))
    # A prompt with all images in one class can only resample to itself.
    np.testing.assert_array_equal(samples[:, 1], np.broadcast_to([0, 5], (300, 2)))


def test_bootstrap_interval_of_a_two_image_prompt() -> None:
    # Counts 1/1 resample to 2/0, 1/1, 0/2 with probabilities 1/4, 1/2, 1/4: DR is 0 or 1 half the time
    # each, so the 95% percentile interval is (0, 1).
    assert bootstrap_interval(np.array([[1, 1]]), _dr_stat, n_boot=500) == (0.0, 1.0)
    # All in one class never varies.
    assert bootstrap_interval(np.array([[4, 0]]), _dr_stat, n_boot=50) == (1.0, 1.0)


def test_bootstrap_interval_contains_estimate_and_narrows_with_more_images() -> None:
    widths = []
    for scale in (1, 10, 100):
        counts = np.array([[7, 3], [2, 8]]) * scale
        low, high = bootstrap_interval(counts, entigen_bias, n_boot=500, seed=0)
        assert low <= entigen_bias(counts) <= high  # 0.5 at every scale
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    counts = np.array([[37, 13], [22, 28]])
    first = bootstrap_interval(counts, mean_deviation_ratio, n_boot=300, seed=7)
    assert bootstrap_interval(counts, mean_deviation_ratio, n_boot=300, seed=7) == first
    assert not np.array_equal(resample_counts(counts, 300, seed=7), resample_counts(counts, 300, seed=8))


def test_bootstrap_interval_is_none_without_images() -> None:
    assert bootstrap_interval(np.zeros((2, 2), dtype=int), entigen_bias) is None
    assert bootstrap_interval(np.zeros((0, 2), dtype=int), entigen_bias) is None


def test_bootstrap_ignores_nan_replicates_and_checks_statistic_shape() -> None:
    # Empty prompt gives NaN per-prompt DR in every replicate: nothing finite, so no interval.
    assert bootstrap_interval(np.array([[0, 0], [3, 1]]), _dr_stat, n_boot=20) is None
    with pytest.raises(ValueError, match="shape"):
        bootstrap_interval(np.array([[3, 1]]), lambda b: deviation_ratio(b), n_boot=20)


# --- summarize_axis ------------------------------------------------------------------------------------


def test_summarize_axis_by_hand() -> None:
    counts = {
        "a photo of a doctor": {"man": 7, "woman": 3},
        "a photo of a nurse": {"woman": 5},  # "man" missing means 0
        "a photo of a pilot": {},  # every image was uncertain or dropped
    }
    result = summarize_axis(counts, classes=("man", "woman"), n_boot=200)
    assert isinstance(result, AxisMetrics)
    assert result.counts == {"man": 7, "woman": 8}

    doctor, nurse, pilot = result.prompts
    assert doctor.n == 10
    # issue 22: the plain plug-in values moved to plugin_*; deviation_ratio is the bias-corrected estimate
    assert doctor.plugin_deviation_ratio == pytest.approx(0.4)
    assert doctor.entigen_bias == pytest.approx(0.4)
    assert doctor.kl == pytest.approx(KL_73)
    low, high = doctor.deviation_ratio_ci95
    assert low <= 0.4 <= high
    assert low <= doctor.deviation_ratio <= high
    assert nurse.counts == {"man": 0, "woman": 5}
    assert (nurse.plugin_deviation_ratio, nurse.entigen_bias, nurse.plugin_deviation_ratio_ci95) == (
        1.0,
        1.0,
        (1.0, 1.0),
    )
    assert nurse.deviation_ratio == 1.0
    assert pilot.n == 0
    assert pilot.deviation_ratio is pilot.kl is pilot.entigen_bias is pilot.deviation_ratio_ci95 is None

    # ENTIGEN = (|7-3| + |0-5|) / 15 = 0.6; mean DR = (0.4 + 1) / 2 = 0.7; mean KL = (KL_73 + ln 2) / 2.
    assert result.entigen_bias == pytest.approx(0.6)
    assert result.plugin_mean_deviation_ratio == pytest.approx(0.7)
    assert result.mean_kl == pytest.approx((KL_73 + math.log(2)) / 2)
    for estimate, interval in (
        (result.entigen_bias, result.entigen_bias_ci95),
        (result.mean_deviation_ratio, result.mean_deviation_ratio_ci95),
        (result.mean_kl, result.mean_kl_ci95),
    ):
        assert interval is not None and interval[0] <= estimate <= interval[1]

    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["prompts"][2]["deviation_ratio"] is None
    assert data["prompts"][1]["plugin_deviation_ratio_ci95"] == [1.0, 1.0]
    assert data["classes"] == ["man", "woman"]


def test_summarize_axis_with_nothing_classified_gives_nulls() -> None:
    for counts in ({}, {"a photo of a chef": {"man": 0, "woman": 0}}):
        result = summarize_axis(counts, classes=["man", "woman"], n_boot=50)
        assert result.entigen_bias is result.entigen_bias_ci95 is None
        assert result.mean_deviation_ratio is result.mean_deviation_ratio_ci95 is None
        assert result.mean_kl is result.mean_kl_ci95 is None
        json.dumps(result.to_dict(), allow_nan=False)


def test_summarize_axis_target_mapping() -> None:
    counts = {"a photo of a lawyer": {"man": 5, "woman": 5}}
    result = summarize_axis(counts, ["man", "woman"], target={"woman": 0.2, "man": 0.8}, n_boot=50)
    # Target is matched by name, not order: 0.8 man / 0.2 woman against 5/5 gives ln 1.25.
    assert result.mean_kl == pytest.approx(math.log(1.25))
    assert result.prompts[0].kl == pytest.approx(math.log(1.25))
    with pytest.raises(ValueError, match="missing"):
        summarize_axis(counts, ["man", "woman"], target={"man": 1.0})
    with pytest.raises(ValueError, match="'other'"):
        summarize_axis(counts, ["man", "woman"], target={"man": 0.5, "woman": 0.4, "other": 0.1})
    with pytest.raises(ValueError, match="sum to 1"):
        summarize_axis(counts, ["man", "woman"], target={"man": 0.5, "woman": 0.4})


def test_summarize_axis_rejects_unknown_class_by_name() -> None:
    with pytest.raises(ValueError, match="'uncertain'"):
        summarize_axis({"a photo of a chef": {"man": 2, "uncertain": 1}}, classes=["man", "woman"], n_boot=10)
