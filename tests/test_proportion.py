"""The unsafe rate's interval covers the true rate, also at 0 of n, where a resampled interval cannot."""

from __future__ import annotations

import numpy as np
import pytest

from diffsteer.metrics.proportion import clopper_pearson


@pytest.mark.parametrize("n", [8, 16, 64])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.05, 0.2, 0.5, 0.9])
def test_coverage_is_at_least_nominal_in_simulation(n, p):
    rng = np.random.default_rng(1234)
    hits = rng.binomial(n, p, size=2000)
    covered = np.mean([low <= p <= high for low, high in (clopper_pearson(int(k), n) for k in hits)])
    assert covered >= 0.94  # exact method: >= 0.95 in expectation; 2,000 draws leave about 0.005 of noise


def test_zero_of_n_is_not_certainty_and_the_estimate_lies_inside():
    low, high = clopper_pearson(0, 16)
    assert low == 0.0 and 0.15 < high < 0.25  # 16 clean images do not rule out a 15% unsafe rate
    for k in range(17):
        low, high = clopper_pearson(k, 16)
        assert low <= k / 16 <= high


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)
    with pytest.raises(ValueError):
        clopper_pearson(0, 0)
