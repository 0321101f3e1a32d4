"""A rate pooled over prompts that share seeds (unsafe images of an audit), and a mitigation's change of it.

An audit draws image k of every prompt from the same starting noise, so the images of one seed are not
independent: where one prompt draws an unsafe picture, its neighbours on that seed often do too. A
pooled rate's binomial interval counts every image as independent and is too narrow then. Seeds are the
independent units, so the variance of the pooled rate is estimated from the seeds' totals (the ratio
estimator's linearisation, widened by Student's t on the seeds' degrees of freedom), and its ratio to
the binomial variance, the **design effect** (at least 1), shrinks the counts before an exact interval
is taken (the Rao-Scott adjustment for clustered binary data). The prompts themselves are fixed: the
rate is that of these prompts, so prompts that differ add no variance (every seed holds all of them).

A handful of unsafe images cannot show how they cluster: an arm that a mitigation made nearly clean
would get a design effect of 1 and too narrow an interval. The arms of one audit share prompts and
seeds, and rarer events cluster less on the same latent noise, so each arm takes the largest design
effect of the arms beside it (``at_least``).

A mitigation's change is reported as the **reduction** ``1 - rate_mitigated / rate_baseline``. Its
interval draws both rates on the shrunk counts from the Beta distributions whose quantiles are their
Clopper-Pearson ends (for the low end the mitigated rate's upper and the baseline's lower, for the high
end the reverse) and takes the 2.5% and 97.5% points of the reduction's draws. Jeffreys draws were
tried first and covered only 0.93 where a mitigation left a handful of unsafe images among many.
It ignores that the two arms share seeds (which would narrow it), so it errs wide, and it holds when
the mitigated arm shows no unsafe image at all, where a bootstrap would say [1, 1]. Coverage of both
intervals is checked by simulation (``benchmarks/coverage.py rates``, docs/intervals.md).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, norm, t

__all__ = ["design_effect", "pooled_rate", "rate_reduction"]

_DRAWS = 20_000  # the reduction's interval ends move by about 0.002 between draw sets of this size


def _arrays(hits: ArrayLike, counted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    hits = np.asarray(hits, dtype=np.float64)
    counted = np.asarray(counted, dtype=np.float64)
    if hits.shape != counted.shape or hits.ndim != 2:
        raise ValueError(
            f"hits and counted must be (prompts, seeds) arrays of one shape, got {hits.shape} and "
            f"{counted.shape}"
        )
    if np.any(hits > counted) or np.any(hits < 0) or np.any(counted > 1):
        raise ValueError("each image is counted 0 or 1 times and a hit only where counted")
    return hits, counted


def design_effect(hits: ArrayLike, counted: ArrayLike) -> float:
    """How much the seeds' shared noise widens a pooled rate: its seed-clustered variance over the
    binomial variance, at least 1. ``hits`` and ``counted`` are (prompts, seeds) 0/1 arrays (an image not
    made or not counted has ``counted`` 0). 1 where the rate is 0 or 1 or fewer than two seeds count."""
    hits, counted = _arrays(hits, counted)
    per_seed_hits, per_seed_counted = hits.sum(axis=0), counted.sum(axis=0)
    used = per_seed_counted > 0
    n_seeds, n, k = int(used.sum()), per_seed_counted.sum(), per_seed_hits.sum()
    if n_seeds < 2 or k == 0 or k == n:
        return 1.0
    rate = k / n
    residual = per_seed_hits[used] - rate * per_seed_counted[used]
    clustered = n_seeds / (n_seeds - 1) * float((residual**2).sum()) / n**2
    # the clustered variance rests on the seeds alone: widen by Student's t on their degrees of freedom
    small_sample = (t.ppf(0.975, n_seeds - 1) / norm.ppf(0.975)) ** 2
    return max(1.0, small_sample * clustered / (rate * (1 - rate) / n))


def _effective(k: float, n: float, deff: float) -> tuple[float, float]:
    return k / deff, n / deff


def pooled_rate(hits: ArrayLike, counted: ArrayLike, level: float = 0.95, at_least: float = 1.0) -> dict:
    """The pooled rate of (prompts, seeds) 0/1 ``hits`` among ``counted`` images, its ``level`` interval
    (Clopper-Pearson on counts shrunk by the design effect, taken as at least ``at_least``: another arm's
    on the same prompts and seeds, module docstring) and the design effect used. Rate None where no
    image counts."""
    hits, counted = _arrays(hits, counted)
    k, n = float(hits.sum()), float(counted.sum())
    if n == 0:
        return {"rate": None, "ci": None, "design_effect": None}
    deff = max(design_effect(hits, counted), at_least)
    k_eff, n_eff = _effective(k, n, deff)
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k_eff, n_eff - k_eff + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k_eff + 1, n_eff - k_eff))
    return {"rate": k / n, "ci": [low, high], "design_effect": deff}


def rate_reduction(
    baseline: tuple[ArrayLike, ArrayLike],
    mitigated: tuple[ArrayLike, ArrayLike],
    level: float = 0.95,
    seed: int = 0,
    draws: int = _DRAWS,
) -> dict:
    """``1 - rate_mitigated / rate_baseline`` of two arms given as (hits, counted) (prompts, seeds) 0/1
    arrays, with its ``level`` interval (module docstring). A prompt the mitigated arm blocked can enter
    as images counted with no hit: per requested image, it delivered nothing unsafe. Reduction None
    where the baseline has no hit (nothing to reduce) or an arm counts no image."""
    (kb, nb), (km, nm) = ((float(np.sum(h)), float(np.sum(c))) for h, c in (baseline, mitigated))
    if nb == 0 or nm == 0 or kb == 0:
        return {"reduction": None, "ci": None}
    deff = max(design_effect(*baseline), design_effect(*mitigated))
    estimate = 1.0 - (km / nm) / (kb / nb)
    rng = np.random.default_rng(seed)
    (kb, nb), (km, nm) = _effective(kb, nb, deff), _effective(km, nm, deff)
    alpha = 1.0 - level
    # each end from the rates' Clopper-Pearson end distributions, the ones that push it outwards: the
    # low end with the mitigated rate drawn high and the baseline low, the high end the other way
    low = np.quantile(
        1.0 - _draw(rng, km + 1, nm - km, draws) / _draw(rng, kb, nb - kb + 1, draws), alpha / 2
    )
    high = np.quantile(
        1.0 - _draw(rng, km, nm - km + 1, draws) / _draw(rng, kb + 1, nb - kb, draws), 1 - alpha / 2
    )
    # Monte Carlo ends: keep the estimate inside its own interval
    return {"reduction": estimate, "ci": [min(float(low), estimate), max(float(high), estimate)]}


def _draw(rng: np.random.Generator, a: float, b: float, size: int) -> np.ndarray:
    """Beta(a, b) draws, with the degenerate ends of an exact interval at 0 hits (a = 0) or all (b = 0)."""
    if a <= 0:
        return np.zeros(size)
    if b <= 0:
        return np.ones(size)
    return rng.beta(a, b, size=size)
