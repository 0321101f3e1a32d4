"""An exact interval for a rate (unsafe images among judged images): Clopper-Pearson.

A rate near 0 is exactly where a safety audit looks, and where resampling the observed images fails:
0 unsafe out of 16 resamples to [0, 0], which claims certainty 16 images cannot give. The
Clopper-Pearson interval inverts the binomial test, so its coverage is at least the nominal level
for every true rate and every n (it errs on the wide side); ``tests/test_proportion.py`` checks that
by simulation.
"""

from __future__ import annotations

from scipy.stats import beta

__all__ = ["clopper_pearson"]


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The two-sided ``level`` interval for a binomial rate after ``k`` successes in ``n`` trials."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
