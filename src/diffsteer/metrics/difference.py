"""The interval of a change in mean DR between two runs (``diffsteer compare``, the report's change
against the baseline), paired by seed when the runs share their seeds.

Each run's mean plug-in DR is centred on its mean DR plus each prompt's small-sample bias, which is
known exactly for any share vector (binomial sums; a fixed-seed Monte Carlo for 3+ classes). The
interval is a normal interval of the difference of the two mean plug-ins minus the smallest and largest
difference of bias allowed by each prompt's 99% share box (the direction that widens it), so it keeps
its coverage at and near balance. Its spread comes from the sampling model of the mean's test
(:mod:`diffsteer.metrics.intervals`) at the runs' estimated shares: exact binomial counts per prompt,
tied across all prompts of both runs by the correlations their redraws show. Redraws made together (the
same seed indices: paired) show how B's prompts move with A's, so the noise the shared seeds add to
both cancels; redraws made apart (unpaired) show no link. A prompt near balance leans with its run's
pooled shares, which on shared seeds is the way the other run leans too.

Why not the mean's test inversion: a test of one difference leaves the two runs' levels free, and at
levels far from the estimates (one run at 0, the other skewed) the difference of shared-seed runs is
so spread out that implausible differences pass; the bias box needs no such nuisance (docs/intervals.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from diffsteer.metrics.intervals import (
    LEVEL,
    _check_level,
    _config_shares,
    _null_draws,
    _plugin_dr,
    _prepare,
    _seed_noise,
    _z,
    debiased_deviation_ratio,
    share_box,
)

__all__ = ["mean_difference_interval"]

# Level of the per-prompt boxes over which each run's bias is bounded: wider than the interval's own,
# so one prompt whose box misses its true shares moves the bound little.
BIAS_BOX_LEVEL = 0.99


def _simplex_grid(n_classes: int) -> np.ndarray:
    """Share vectors on a lattice of the simplex, fine enough to bound the bias inside a small box."""
    steps = {2: 400, 3: 60, 4: 24}.get(n_classes, 12)
    if n_classes == 2:
        first = np.arange(steps + 1) / steps
        return np.stack([first, 1 - first], axis=-1)
    points = []

    def fill(prefix: list[int], left: int, slots: int) -> None:
        if slots == 1:
            points.append([*prefix, left])
            return
        for k in range(left + 1):
            fill([*prefix, k], left - k, slots - 1)

    fill([], steps, n_classes)
    return np.asarray(points, dtype=np.float64) / steps


@lru_cache(maxsize=64)
def _bias_table(n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(grid shares (G, C), expected plug-in DR minus true DR (G,)) for prompts of ``n`` images."""
    grid = _simplex_grid(n_classes)
    true_dr = _plugin_dr(grid)
    if n_classes == 2:
        k = np.arange(n + 1)
        log_comb = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
        first = grid[:, :1]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_pmf = log_comb + np.where(k > 0, k * np.log(first), 0.0)
            log_pmf = log_pmf + np.where(k < n, (n - k) * np.log(1.0 - first), 0.0)
        pmf = np.exp(log_pmf)
        plugin = np.abs(2 * k - n) / n
        expected = pmf @ plugin
    else:
        # common random numbers for every grid point: smooth in the shares, exact to about 0.003
        rng = np.random.default_rng(12345)
        draws = 2000
        expected = np.empty(len(grid))
        for i, shares in enumerate(grid):
            expected[i] = _plugin_dr(rng.multinomial(n, shares, size=draws).astype(np.float64)).mean()
    return grid, expected - true_dr


def _table_size(n: int, n_classes: int) -> int:
    """The sample size whose bias table serves prompts of ``n`` images.

    Two classes: n itself (exact and cheap). Three or more: n rounded on a 5% geometric grid above 20, so
    an audit whose prompts lost a few different numbers of images to the classifier builds a handful of
    Monte Carlo tables, not one per count; the bias scales as 1 / sqrt(n), so the rounding moves it by
    about 1%.
    """
    if n_classes == 2 or n <= 20:
        return n
    return int(round(1.05 ** round(math.log(n) / math.log(1.05))))


def _bias_range(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest bias of the plug-in DR over each prompt's 99% share box; counts (..., C)."""
    low, high = share_box(counts, BIAS_BOX_LEVEL)
    n = counts.sum(axis=-1)
    flat_counts = counts.reshape(-1, counts.shape[-1])
    flat_low, flat_high, flat_n = (
        low.reshape(flat_counts.shape),
        high.reshape(flat_counts.shape),
        n.reshape(-1),
    )
    bias_min = np.full(len(flat_counts), np.nan)
    bias_max = np.full(len(flat_counts), np.nan)
    for size in np.unique(flat_n):
        if size <= 0:
            continue
        rows = np.flatnonzero(flat_n == size)
        grid, bias = _bias_table(_table_size(int(size), counts.shape[-1]), counts.shape[-1])
        tol = 1e-9
        inside = (
            (grid[None] >= flat_low[rows, None] - tol) & (grid[None] <= flat_high[rows, None] + tol)
        ).all(axis=-1)
        # a box narrower than the lattice holds no point: take the lattice point nearest the shares
        shares = flat_counts[rows] / size
        nearest = np.abs(grid[None] - shares[:, None]).sum(axis=-1).argmin(axis=-1)
        inside[np.arange(len(rows)), nearest] |= ~inside.any(axis=-1)
        bias_min[rows] = np.where(inside, bias[None], np.inf).min(axis=-1)
        bias_max[rows] = np.where(inside, bias[None], -np.inf).max(axis=-1)
    return bias_min.reshape(n.shape), bias_max.reshape(n.shape)


def _mean_over_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    count = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass
class _MeanParts:
    """One run's mean plug-in and the bounds of its bias (leading dimensions: independent audits)."""

    point: np.ndarray  # mean of the per-prompt debiased estimates
    observed: np.ndarray  # mean plug-in
    bias_min: np.ndarray  # mean over prompts of the smallest bias inside each prompt's box
    bias_max: np.ndarray


def _mean_parts(counts_pc: ArrayLike) -> _MeanParts:
    counts = np.asarray(counts_pc, dtype=np.float64)
    valid = counts.sum(axis=-1) > 0
    bias_min, bias_max = _bias_range(counts)
    return _MeanParts(
        point=_mean_over_valid(debiased_deviation_ratio(counts), valid),
        observed=_mean_over_valid(_plugin_dr(counts), valid),
        bias_min=_mean_over_valid(bias_min, valid),
        bias_max=_mean_over_valid(bias_max, valid),
    )


def _difference_spread(
    counts_a: ArrayLike, counts_b: ArrayLike, replicates_a: ArrayLike, replicates_b: ArrayLike
) -> np.ndarray:
    """Standard deviation of the difference of the two runs' mean plug-ins, at their estimated shares.

    The same sampling model as the mean's test (:mod:`diffsteer.metrics.intervals`): each prompt's
    counts exactly binomial at its estimated shares, all prompts of both runs tied by the correlations
    the joint redraws show. A prompt near balance leans with its run's pooled shares, which on shared
    seeds is the way the other run's prompts lean too, so the seeds' noise cancels as it does.
    """
    a = _prepare(counts_a, replicates_a)
    b = _prepare(counts_b, replicates_b)
    if a.n.shape[-1] == 0 or b.n.shape[-1] == 0:  # a run without prompts: nothing to compare
        return np.full(a.point.shape, np.nan)
    noise = _seed_noise([a, b], cautious=False)
    shares = [
        _config_shares(a, a.point[None], a.offsets, a.lean),
        _config_shares(b, b.point[None], b.offsets, b.lean),
    ]
    return _null_draws([a, b], [-1.0, 1.0], shares, noise, plugin=True)[0].std(axis=-1)


def mean_difference_interval(
    counts_a: ArrayLike,
    counts_b: ArrayLike,
    replicates_a: ArrayLike,
    replicates_b: ArrayLike,
    level: float = LEVEL,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of mean DR of B minus mean DR of A, over each run's prompts with images.

    Redraws of the two runs made together (the same seed indices: paired) give the difference's spread
    with the seeds' shared noise cancelled; redraws made apart give the unpaired one. Each run's bias
    is bounded as for the mean, and the bounds enter in the direction that widens the interval.
    """
    _check_level(level)
    a = _mean_parts(counts_a)
    b = _mean_parts(counts_b)
    z = _z(level, 2)
    spread = _difference_spread(counts_a, counts_b, replicates_a, replicates_b)
    difference = b.observed - a.observed
    expected_low, expected_high = difference - z * spread, difference + z * spread
    low = np.maximum(expected_low - (b.bias_max - a.bias_min), -1.0)
    high = np.maximum(np.minimum(expected_high - (b.bias_min - a.bias_max), 1.0), low)
    return np.clip(b.point - a.point, low, high), low, high
