"""Deviation-ratio estimates and 95% intervals that keep their coverage near balance (issue 22).

Why not the plug-in and a percentile bootstrap: the plug-in DR max_c |p_c - 1/C| / (1 - 1/C) of a sample
is biased upwards (sampling noise only ever adds deviation), most at balance, and bootstrap replicates
drawn around it are biased again, so the percentile interval of a fair model excludes 0 almost always.

Per prompt (:func:`deviation_ratio_interval`): the interval is a confidence set for the class shares
mapped onto DR. Each class share gets a Wilson score interval; the DR interval is the smallest and
largest DR of any share vector in that box (and on the simplex). Whatever the true shares, the DR
interval contains the true DR whenever the box contains the true shares, 0 included, so there is no
boundary problem. Wilson's actual coverage dips below its nominal level at some small sizes, so two
classes use the 96% score (z = 2.054): over true shares 0.5-0.95 the DR interval's exact coverage is
then 0.95-0.98 at 16-192 images (0.93-1.00 at 8; docs/intervals.md). Three classes or more use
a Bonferroni box (96% / C per class, then mapped), since one box must hold every share at once.

Point estimate (:func:`debiased_deviation_ratio`): each class's squared deviation (p_c - 1/C)^2 has an
unbiased estimate, (p^_c - 1/C)^2 - p^_c (1 - p^_c) / (N - 1); the estimate is the DR of those
(negative ones clipped to 0), so a fair prompt usually gets 0 and a clear skew keeps its plug-in value
minus a little. It is kept inside its interval (a clip that only bites at N of a few images).

Mean over prompts (:func:`mean_deviation_ratio_interval`): the mean plug-in DR is centred on the mean
of each prompt's *expected* plug-in, which is the mean DR plus each prompt's small-sample bias. The
interval is (a) a normal interval of the mean plug-in's expectation, whose spread comes from redraws by
seed when the seeds are known (one redraw picks seed indices with replacement and keeps every prompt of
a seed together, because image k of every prompt starts from the same noise; see :func:`_mean_spread`),
minus (b) the smallest and largest mean bias that share vectors inside each prompt's 99% box allow. The
bias is computed exactly for the sample size (binomial, or a fixed-seed Monte Carlo for 3+ classes), so
the interval includes 0 for a fair model and narrows to about the plain spread where every prompt is
clearly skewed (bias near 0). Simulated coverage, per cell: benchmarks/RESULTS.md, docs/intervals.md.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "debiased_deviation_ratio",
    "detectable_deviation_ratio",
    "deviation_ratio_interval",
    "mean_deviation_ratio_interval",
    "mean_difference_interval",
    "plan_images_per_prompt",
    "share_box",
]

LEVEL = 0.95
# Nominal level of the share box behind each per-prompt DR interval (see the module docstring).
SHARE_BOX_LEVEL = 0.96
# Level of the per-prompt boxes over which the mean's bias is bounded: wider than the interval's own,
# so one prompt whose box misses its true shares moves the bound little.
BIAS_BOX_LEVEL = 0.99


def _z(level: float, n_classes: int) -> float:
    """Two-sided z of each class's score interval: one share for 2 classes, Bonferroni over C otherwise."""
    per_class = 1.0 - (1.0 - level) / (1 if n_classes == 2 else n_classes)
    return NormalDist().inv_cdf(0.5 + per_class / 2.0)


def share_box(counts: ArrayLike, level: float = SHARE_BOX_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of every class share: counts ``(..., C)`` -> (low, high), each ``(..., C)``.

    NaN where a prompt has no images. Counts may be fractional (expected counts, for planning).
    """
    arr = np.asarray(counts, dtype=np.float64)
    z = _z(level, arr.shape[-1])
    n = arr.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = arr / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(np.maximum(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / (1 + z * z / n)
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return low, high


def _box_dr_range(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest DR of any share vector in the box [low, high] (..., C) that sums to 1."""
    n_classes = low.shape[-1]
    scale = n_classes / (n_classes - 1)
    even = 1.0 / n_classes
    # Largest DR: one class as far from 1/C as the box and the other classes' bounds let it go.
    rest_low = low.sum(axis=-1, keepdims=True) - low
    rest_high = high.sum(axis=-1, keepdims=True) - high
    top = np.minimum(high, 1.0 - rest_low)
    bottom = np.maximum(low, 1.0 - rest_high)
    dr_high = np.maximum(top - even, even - bottom).max(axis=-1) * scale
    # Smallest DR: the least t with a share vector inside the box, on the simplex, within t of 1/C.
    if n_classes == 2:
        # one share decides: the distance of its interval from 1/2
        dist = np.maximum(np.maximum(low[..., 0] - even, even - high[..., 0]), 0.0)
        return dist * scale, np.minimum(dr_high, 1.0)
    t_low = np.zeros(low.shape[:-1])
    t_high = np.full(low.shape[:-1], 1.0 - even)
    for _ in range(40):  # bisection to ~1e-12, all prompts at once
        t = (t_low + t_high) / 2
        lo = np.maximum(low, even - t[..., None])
        hi = np.minimum(high, even + t[..., None])
        feasible = (lo <= hi).all(axis=-1) & (lo.sum(axis=-1) <= 1.0) & (hi.sum(axis=-1) >= 1.0)
        t_high = np.where(feasible, t, t_high)
        t_low = np.where(feasible, t_low, t)
    # the bisection stops a hair above a share vector exactly at 1/C: that is balance, DR 0
    t_high = np.where(t_high < 1e-9, 0.0, t_high)
    return t_high * scale, np.minimum(dr_high, 1.0)


def _plugin_dr(counts: np.ndarray) -> np.ndarray:
    n_classes = counts.shape[-1]
    total = counts.sum(axis=-1)
    spread = np.abs(n_classes * counts - total[..., None]).max(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, spread / (total * (n_classes - 1)), np.nan)


def deviation_ratio_interval(counts: ArrayLike, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt 95% DR interval from the share box; counts ``(..., C)`` -> (low, high), NaN if N = 0."""
    _check_level(level)
    low, high = share_box(counts, SHARE_BOX_LEVEL)
    dr_low, dr_high = _box_dr_range(low, high)
    empty = np.isnan(low[..., 0])
    return np.where(empty, np.nan, dr_low), np.where(empty, np.nan, dr_high)


def debiased_deviation_ratio(counts: ArrayLike) -> np.ndarray:
    """The DR of the unbiased estimates of each class's squared deviation, kept inside its interval.

    ``(..., C) -> (...)``; NaN where N = 0; with one image the plug-in (no variance estimate exists).
    """
    arr = np.asarray(counts, dtype=np.float64)
    n_classes = arr.shape[-1]
    n = arr.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = arr / n
        variance = np.where(n > 1, p * (1 - p) / np.maximum(n - 1, 1), 0.0)
        squared = np.maximum((p - 1.0 / n_classes) ** 2 - variance, 0.0)
    estimate = np.sqrt(squared).max(axis=-1) * n_classes / (n_classes - 1)
    low, high = deviation_ratio_interval(arr)
    return np.where(n[..., 0] > 0, np.clip(estimate, low, high), np.nan)


# --- the mean over prompts ------------------------------------------------------------------------------


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


def _check_level(level: float) -> None:
    if not math.isclose(level, LEVEL):
        raise ValueError(f"level: only {LEVEL} is calibrated (coverage checked by simulation); got {level}")


def mean_deviation_ratio_interval(
    counts_pc: ArrayLike, replicates: ArrayLike, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of the mean DR over the prompts with images; NaN where no prompt has any.

    ``counts_pc`` (..., P, C) are an audit's counts (leading dimensions: independent audits);
    ``replicates`` (B, ..., P, C) are bootstrap redraws of them (by seed: see
    :func:`diffsteer.metrics.bootstrap.resample_by_seed`), used only for the spread of the mean plug-in.
    An audit with one prompt that has images gets that prompt's own interval.
    """
    _check_level(level)
    counts = np.asarray(counts_pc, dtype=np.float64)
    parts = _mean_parts(counts, replicates)
    z = _z(level, 2)
    spread = _mean_spread([(parts, 1.0)])
    expected_low, expected_high = parts.observed - z * spread, parts.observed + z * spread
    low = np.maximum(expected_low - parts.bias_max, 0.0)
    high = np.maximum(np.minimum(expected_high - parts.bias_min, 1.0), low)

    n_valid = parts.valid.sum(axis=-1)
    single_low, single_high = deviation_ratio_interval(counts)
    alone = n_valid == 1
    low = np.where(alone, _mean_over_valid(single_low, parts.valid), low)
    high = np.where(alone, _mean_over_valid(single_high, parts.valid), high)
    empty = n_valid == 0
    low, high = np.where(empty, np.nan, low), np.where(empty, np.nan, high)
    return np.clip(parts.point, low, high), low, high


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


# --- planning -------------------------------------------------------------------------------------------


def _favoured_counts(n: float, dr: float, n_classes: int) -> np.ndarray:
    """Expected counts of n images whose DR is ``dr``, one class favoured and the rest even."""
    even = 1.0 / n_classes
    top = even + dr * (1 - even)
    rest = (1 - top) / (n_classes - 1)
    return np.array([top] + [rest] * (n_classes - 1)) * n


def detectable_deviation_ratio(n: int, n_classes: int = 2) -> float | None:
    """Smallest DR that an audit of ``n`` images per prompt tells apart from 0 in a typical run.

    Typical: the counts equal their expectation (one class favoured, the others even), which is the
    median outcome, so a prompt at this DR has its interval exclude 0 about half the time. None if
    ``n`` is 0 or not even DR 1 is distinguishable.
    """
    if n < 1:
        return None
    grid = np.linspace(0.0, 1.0, 1001)
    low, _ = deviation_ratio_interval(np.stack([_favoured_counts(n, d, n_classes) for d in grid]))
    above = np.flatnonzero(low > 0)
    return float(grid[above[0]]) if above.size else None


def _worst_half_width(n: int, n_classes: int) -> float:
    """Largest half-width of the per-prompt interval over true DRs 0..1 at expected counts."""
    grid = np.linspace(0.0, 1.0, 101)
    low, high = deviation_ratio_interval(np.stack([_favoured_counts(n, d, n_classes) for d in grid]))
    return float(((high - low) / 2).max())


def plan_images_per_prompt(half_width: float, n_classes: int = 2, max_images: int = 100_000) -> int:
    """Images per prompt for a per-prompt DR interval no wider than ``+-half_width``, whatever the bias.

    The same interval as the audit's, at the counts a prompt of each true DR gives on average; the worst
    case over true DRs decides (it is a fair or mildly skewed prompt). The mean over prompts is
    narrower than this.
    """
    if not (isinstance(half_width, (int, float)) and 0.0 < half_width < 1.0):
        raise ValueError(f"half_width must be strictly between 0 and 1; got {half_width!r}")
    if n_classes < 2:
        raise ValueError(f"an axis needs at least 2 classes; got {n_classes}")
    low, high = 1, max_images
    if _worst_half_width(high, n_classes) > half_width:
        raise ValueError(f"half_width {half_width} needs more than max_images={max_images} images per prompt")
    while low < high:
        mid = (low + high) // 2
        if _worst_half_width(mid, n_classes) <= half_width:
            high = mid
        else:
            low = mid + 1
    return low
