"""The interval of a change in mean DR between two runs (``diffsteer compare``, the report's change
against the baseline), paired by seed when the runs share their seeds.

The spread of the difference of the two runs' mean plug-in DRs comes from redraws of their seeds:
made together (the same seed indices: paired) they cancel the noise the seeds add to both runs; made
apart (unpaired) they do not. Each run's mean plug-in is centred on its mean DR plus each prompt's
small-sample bias, which is known exactly for any share vector (binomial sums; a fixed-seed Monte Carlo
for 3+ classes); the interval subtracts the smallest and largest bias allowed by each prompt's 99% share
box, in the direction that widens it. Prompts near balance may lean either way, so they all follow one
common class, in whichever direction gives the larger variance; the redraws give only the design effect,
which multiplies the binomial variance at shares moved z^2/2 images toward balance (Agresti-Coull).

This is the method issue 22 first merged; the mean of one run moved to a test inversion
(:mod:`diffsteer.metrics.intervals`), the difference has not (docs/intervals.md says why).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from diffsteer.metrics.intervals import (
    LEVEL,
    _check_level,
    _plugin_dr,
    _z,
    debiased_deviation_ratio,
    deviation_ratio_interval,
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
    """What the mean's interval is built from, for one or many audits (leading dimensions)."""

    valid: np.ndarray  # (..., P) prompts with images
    weights: np.ndarray  # (..., P) each prompt's weight in the mean (1 / prompts with images; 0 if empty)
    point: np.ndarray  # mean of the per-prompt debiased estimates
    observed: np.ndarray  # mean plug-in
    oriented: np.ndarray  # (B, ..., P) each redraw's deviation of the observed leading class, signed
    sure: np.ndarray  # (..., P) whether a prompt's interval excludes 0 (its leading class is known)
    variance_observed: np.ndarray  # (..., P) binomial variance of the oriented deviation at the estimate
    variance_adjusted: np.ndarray  # (..., P) the same at Agresti-Coull shares (see _mean_spread)
    bias_min: np.ndarray  # mean over prompts of the smallest bias inside each prompt's box
    bias_max: np.ndarray


def _mean_parts(counts_pc: ArrayLike, replicates: ArrayLike) -> _MeanParts:
    counts = np.asarray(counts_pc, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    n_classes = counts.shape[-1]
    scale = n_classes / (n_classes - 1)
    valid = counts.sum(axis=-1) > 0
    n = counts.sum(axis=-1)
    single_low, _ = deviation_ratio_interval(counts)
    sure = np.nan_to_num(single_low) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / n[..., None]
        deviation = np.nan_to_num(shares - 1.0 / n_classes)
        # A prompt whose interval excludes 0 moves with its own leading class. One near balance may lean
        # either way, and the seeds push every prompt toward the same classes, so all of those follow
        # one common class: the leading class of the audit's pooled counts.
        pooled = counts.sum(axis=-2, keepdims=True)
        common = np.abs(pooled / pooled.sum(axis=-1, keepdims=True) - 1.0 / n_classes).argmax(axis=-1)
        lead = np.where(sure, np.abs(deviation).argmax(axis=-1), common)  # (..., P)
        lead_share = np.take_along_axis(np.nan_to_num(shares), lead[..., None], axis=-1)[..., 0]
        sign = np.where(sure & (lead_share < 1.0 / n_classes), -1.0, 1.0)
        rep_n = reps.sum(axis=-1)
        rep_lead = np.take_along_axis(reps, np.broadcast_to(lead[None, ..., None], (*reps.shape[:-1], 1)), -1)
        oriented = np.where(rep_n > 0, sign * (rep_lead[..., 0] / rep_n - 1.0 / n_classes) * scale, np.nan)
        z2 = _z(LEVEL, 2) ** 2
        adjusted = (lead_share * n + z2 / 2) / (n + z2)
        variance_observed = np.where(valid, scale**2 * lead_share * (1 - lead_share) / np.maximum(n, 1), 0.0)
        variance_adjusted = np.where(valid, scale**2 * adjusted * (1 - adjusted) / np.maximum(n, 1), 0.0)
    n_valid = valid.sum(axis=-1, keepdims=True)
    bias_min, bias_max = _bias_range(counts)
    return _MeanParts(
        valid=valid,
        weights=np.where(valid, 1.0 / np.maximum(n_valid, 1), 0.0),
        point=_mean_over_valid(debiased_deviation_ratio(counts), valid),
        observed=_mean_over_valid(_plugin_dr(counts), valid),
        oriented=oriented,
        sure=sure,
        variance_observed=variance_observed,
        variance_adjusted=variance_adjusted,
        bias_min=_mean_over_valid(bias_min, valid),
        bias_max=_mean_over_valid(bias_max, valid),
    )


def _mean_spread(parts: list[tuple[_MeanParts, float]]) -> np.ndarray:
    """Standard deviation of a signed sum of mean plug-ins (sign +1 / -1 per run), from the redraws.

    Each prompt's plug-in moves with the deviation of its leading class, so the mean's variance is the
    weighted sum of the covariances of those deviations across the redraws (prompts share seeds, so
    they covary). Prompts near balance all follow one common class (see :func:`_mean_parts`), taken in
    whichever direction relative to the clearly skewed prompts gives the larger variance.
    Like a Wald interval, a redraw variance is too small when one class is rare; as Agresti and Coull's
    interval does for a share, the redraws supply only the design effect (their variance over the
    binomial one at the observed shares), which multiplies the binomial variance at shares moved
    z^2/2 images toward 1/2.
    """
    oriented = np.concatenate([p.oriented for p, _ in parts], axis=-1)  # (B, ..., Q)
    weights = np.concatenate([p.weights * sign for p, sign in parts], axis=-1)  # (..., Q)
    sure = np.concatenate([p.sure for p, _ in parts], axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a prompt without images has no redraw mean
        centred = np.nan_to_num(oriented - np.nanmean(oriented, axis=0, keepdims=True))
    weighted = centred * weights[None]
    cov = np.einsum("b...p,b...q->...pq", weighted, weighted) / max(oriented.shape[0] - 1, 1)
    # prompts near balance follow one common class, whose direction relative to the others is unknown:
    # the larger variance of the two
    flip = np.where(sure, 1.0, -1.0)
    variance = np.maximum(
        cov.sum(axis=(-2, -1)), (cov * flip[..., :, None] * flip[..., None, :]).sum(axis=(-2, -1))
    )
    binomial = sum((p.weights**2 * p.variance_observed).sum(axis=-1) for p, _ in parts)
    adjusted = sum((p.weights**2 * p.variance_adjusted).sum(axis=-1) for p, _ in parts)
    # every image of every prompt in one class: no variance to compare with, so the largest design
    # effect a mean of Q prompts can have (all prompts moving as one), Q
    prompts = sum(p.valid.sum(axis=-1) for p, _ in parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        design = np.where(binomial > 0, variance / binomial, prompts)
    return np.sqrt(np.maximum(design, 0.0) * adjusted)


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
    a = _mean_parts(counts_a, replicates_a)
    b = _mean_parts(counts_b, replicates_b)
    z = _z(level, 2)
    spread = _mean_spread([(a, -1.0), (b, 1.0)])
    difference = b.observed - a.observed
    expected_low, expected_high = difference - z * spread, difference + z * spread
    low = np.maximum(expected_low - (b.bias_max - a.bias_min), -1.0)
    high = np.maximum(np.minimum(expected_high - (b.bias_min - a.bias_max), 1.0), low)
    return np.clip(b.point - a.point, low, high), low, high
