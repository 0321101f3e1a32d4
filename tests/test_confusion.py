"""The auditor's own error: confusion matrices and shares corrected through them, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from diffsteer.metrics.confusion import confusion_matrix, correct_axis, correct_shares

# A classifier that calls 10% of men women and 20% of women men (rows: true class; last column abstained).
K = np.array([[90, 10, 0], [20, 80, 0]])


def test_confusion_matrix_counts_abstentions_in_the_last_column():
    truth = ["man", "man", "man", "woman", "woman"]
    said = ["man", "woman", None, "uncertain", "woman"]
    assert confusion_matrix(truth, said, ("man", "woman")).tolist() == [[1, 1, 1], [0, 1, 1]]
    with pytest.raises(ValueError, match="'child' is not one of the axis classes"):
        confusion_matrix(["child"], ["man"], ("man", "woman"))


def test_correction_inverts_the_confusion_inside_the_simplex():
    # observed man share o = 0.9 t + 0.2 (1 - t) = 0.62  =>  t = 0.42 / 0.7 = 0.6
    np.testing.assert_allclose(correct_shares([62, 38], K), [0.6, 0.4], atol=1e-12)


def test_correction_outside_the_simplex_is_the_nearest_distribution():
    # two classes: 0.2 + 0.7 t = 0.95 needs t = 1.07 > 1; the least squares optimum on [0, 1] is t = 1
    np.testing.assert_allclose(correct_shares([95, 5], K), [1.0, 0.0], atol=1e-12)
    # three classes, class 3 said as class 2 half the time: o = (t1, t2 + t3/2, t3/2).
    # o = (.3, .3, .4) inverts to (.3, -.1, .8); the constrained optimum (KKT checked by hand) is
    # (.3, 0, .7), not the clip-and-renormalise answer (.3, 0, .8) / 1.1.
    three = np.array([[100, 0, 0, 0], [0, 100, 0, 0], [0, 50, 50, 0]])
    np.testing.assert_allclose(correct_shares([30, 30, 40], three), [0.3, 0.0, 0.7], atol=1e-9)


def test_abstentions_do_not_enter_the_correction():
    # Same error rates among the images the classifier did label; half the men abstained.
    abstaining = np.array([[45, 5, 50], [20, 80, 0]])
    np.testing.assert_allclose(correct_shares([62, 38], abstaining), [0.6, 0.4], atol=1e-12)


def test_a_class_never_labelled_on_the_reference_set_cannot_be_corrected():
    with pytest.raises(ValueError, match="at least one reference image"):
        correct_shares([5, 5], np.array([[10, 0, 0], [0, 0, 10]]))


def test_correct_axis_per_prompt_mean_and_intervals():
    fix = correct_axis([[62, 38], [95, 5], [0, 0]], K, n_boot=400, seed=1)
    np.testing.assert_allclose(fix.shares[:2], [[0.6, 0.4], [1.0, 0.0]], atol=1e-12)
    assert np.all(np.isnan(fix.shares[2]))  # a prompt without images has no shares
    np.testing.assert_allclose(fix.deviation_ratio[:2], [0.2, 1.0], atol=1e-12)
    assert fix.mean_deviation_ratio == pytest.approx(0.6)  # empty prompt skipped, prompts weigh equally
    for i in range(2):
        lo, hi = fix.deviation_ratio_ci95[i]
        assert lo <= fix.deviation_ratio[i] + 1e-12 and fix.deviation_ratio[i] <= hi + 1e-12
    # 100 images and a 200-image reference leave real uncertainty on the 60/40 prompt
    assert fix.shares_ci95[0, 0, 1] - fix.shares_ci95[0, 0, 0] > 0.1
    again = correct_axis([[62, 38], [95, 5], [0, 0]], K, n_boot=400, seed=1)
    np.testing.assert_array_equal(fix.shares_ci95[:2], again.shares_ci95[:2])
