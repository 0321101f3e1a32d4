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
then 0.95-0.98 at 16-192 images (0.93-1.00 at 8; docs/intervals.md). Three classes or more do not:
one box must hold every share at once (Bonferroni, 96% / C per class), and mapped onto DR, which one
class's deviation mostly decides, it covered 0.985-0.996; their prompts get the mean's test inversion
below with that one prompt. The box still serves inside the mean's method (which prompts may be
balanced, where to clip the estimate) and the planner.

Point estimate (:func:`debiased_deviation_ratio`): each class's squared deviation (p_c - 1/C)^2 has an
unbiased estimate, (p^_c - 1/C)^2 - p^_c (1 - p^_c) / (N - 1); the estimate is the DR of those
(negative ones clipped to 0), so a fair prompt usually gets 0 and a clear skew keeps its plug-in value
minus a little. It is kept inside its interval (a clip that only bites at N of a few images).

Mean over prompts (:func:`mean_deviation_ratio_interval`): the estimate is the mean of the per-prompt
estimates, and the interval holds every mean DR m that a test of "the mean DR is m" accepts at 95%: the
estimate lies between the 2.5% and 97.5% points of its own sampling distribution at prompts whose DRs
average m. That distribution is simulated (500 fixed draws) with each prompt's class counts exactly
binomial at its true shares (for 3+ classes tied within the prompt as a multinomial's covary), and the
prompts tied together by a Gaussian
copula whose correlations are those of the prompts' shares over the redraws by seed (image k of every
prompt starts from the same noise, so a fair audit's prompts all lean the same way on the same seeds).
Because the test at m = 0 is a test of exact balance, 0 is inside the interval for a fair model 97.5%
of the time, with no boundary problem; far from balance the interval is about a normal one. Which
prompts carry which part of m is a nuisance: the low end uses the estimates' spread shrunk toward equal
(empirical Bayes), with prompts that may be balanced placed at 0, the high end an even spread, the least
favourable one (the estimate's expectation is convex in a prompt's DR), with only the favoured class
deviating for 3+ classes. The correlations are noisy at 8-16 seeds and that noise matters, so they are
shrunk toward what one latent factor per seed gives prompts of their shares (empirical Bayes), whose
average is raised by half a standard error. Simulated coverage, per
cell: benchmarks/RESULTS.md, docs/intervals.md. The interval of a difference between two runs is in
:mod:`diffsteer.metrics.difference`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

__all__ = [
    "debiased_deviation_ratio",
    "detectable_deviation_ratio",
    "deviation_ratio_interval",
    "mean_deviation_ratio_interval",
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


def _box_interval(counts: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The DR range of the share box; counts ``(..., C)`` -> (low, high), NaN if N = 0."""
    low, high = share_box(counts, SHARE_BOX_LEVEL)
    dr_low, dr_high = _box_dr_range(low, high)
    empty = np.isnan(low[..., 0])
    return np.where(empty, np.nan, dr_low), np.where(empty, np.nan, dr_high)


def deviation_ratio_interval(counts: ArrayLike, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt 95% DR interval; counts ``(..., C)`` -> (low, high), NaN if N = 0.

    Two classes: the share box mapped onto DR. Three or more: the mean's test inversion with one prompt
    (module docstring), since a box that must hold C shares at once is too wide once mapped onto DR.
    """
    _check_level(level)
    arr = np.asarray(counts, dtype=np.float64)
    if arr.shape[-1] == 2:
        return _box_interval(arr)
    return _single_prompt_inversion(arr)


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
    low, high = _box_interval(arr)
    return np.where(n[..., 0] > 0, np.clip(estimate, low, high), np.nan)


# --- the mean over prompts ------------------------------------------------------------------------------

# Draws of the seed-correlated sampling noise behind every test of the mean (fixed, so an audit's
# interval is reproducible and every candidate mean is tested against the same draws).
NULL_DRAWS = 500
_NULL_SEED = 22
# How many standard errors the mean correlation between prompts is raised by (see _seed_noise).
CORRELATION_CAUTION = 0.5
# Tests per end of the test inversion (see _invert), the first ones halving the bracket.
_INVERSION_STEPS = 10
_BISECTION_FIRST = 4
_LEGENDRE = np.polynomial.legendre.leggauss(16)


def _check_level(level: float) -> None:
    if not math.isclose(level, LEVEL):
        raise ValueError(f"level: only {LEVEL} is calibrated (coverage checked by simulation); got {level}")


def _debiased_from_shares(shares: np.ndarray, n: np.ndarray) -> np.ndarray:
    """:func:`debiased_deviation_ratio` of share vectors ``(..., C)`` of ``n`` images, without the clip."""
    n_classes = shares.shape[-1]
    n = n[..., None]
    variance = np.where(n > 1, shares * (1 - shares) / np.maximum(n - 1, 1), 0.0)
    squared = np.maximum((shares - 1.0 / n_classes) ** 2 - variance, 0.0)
    return np.sqrt(squared).max(axis=-1) * n_classes / (n_classes - 1)


@dataclass
class _Run:
    """One audit's prompts (leading dimensions: independent audits), as the mean's test needs them."""

    n: np.ndarray  # (..., P) images per prompt
    weights: np.ndarray  # (..., P) 1 / prompts with images, 0 for a prompt without images
    point: np.ndarray  # (...) mean of the per-prompt estimates: the reported estimate
    lean: np.ndarray  # (..., P, C) the direction each prompt deviates in, scaled to DR 1
    lean_even: np.ndarray  # (..., P, C) the same with only its leading class deviating, the rest even
    offsets: np.ndarray  # (..., P) each prompt's estimate minus the mean, shrunk toward 0 (see _prepare)
    low_end_offsets: np.ndarray  # (..., P) the same with possibly balanced prompts at 0 (see _prepare)
    replicate_shares: np.ndarray  # (B, ..., P, C) class shares of each redraw


def _prepare(counts_pc: ArrayLike, replicates: ArrayLike) -> _Run:
    counts = np.asarray(counts_pc, dtype=np.float64)
    reps = np.asarray(replicates, dtype=np.float64)
    n_classes = counts.shape[-1]
    n = counts.sum(axis=-1)
    valid = n > 0
    n_valid = valid.sum(axis=-1, keepdims=True)
    weights = np.where(valid, 1.0 / np.maximum(n_valid, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(valid[..., None], counts / np.maximum(n, 1)[..., None], 1.0 / n_classes)
        rep_n = reps.sum(axis=-1, keepdims=True)
        rep_shares = np.where(rep_n > 0, reps / np.maximum(rep_n, 1), 1.0 / n_classes)
    estimate = np.where(valid, np.nan_to_num(debiased_deviation_ratio(counts)), 0.0)
    point = (weights * estimate).sum(axis=-1)
    pooled = counts.sum(axis=-2, keepdims=True)
    pooled_n = pooled.sum(axis=-1, keepdims=True)
    pooled = np.where(pooled_n > 0, pooled / np.maximum(pooled_n, 1), 1.0 / n_classes)
    fallback = np.where(
        np.abs(pooled - 1.0 / n_classes).max(axis=-1, keepdims=True) > 1e-12,
        pooled,
        np.eye(n_classes)[0],
    )
    # A prompt whose interval leaves out 0 deviates the way its shares do. One that may be balanced
    # could lean either way; the seeds push all prompts toward the same classes, so it is taken to lean
    # with the audit's pooled shares (towards the first class if those are balanced too).
    sure = np.nan_to_num(_box_interval(counts)[0]) > 0
    direction = np.where(sure[..., None], shares, fallback) - 1.0 / n_classes
    lean = direction / _plugin_dr(direction + 1.0 / n_classes)[..., None]
    # only the most favoured class deviates (by 1 - 1/C at DR 1), the others share its deviation evenly
    lead_mask = np.arange(n_classes) == lean.argmax(axis=-1)[..., None]
    lean_even = np.where(lead_mask, 1.0 - 1.0 / n_classes, -1.0 / n_classes)
    # How far apart the prompts' true DRs are, empirical-Bayes style: the spread of the estimates over
    # the prompts, less the part their sampling noise explains, as a share of it. Identical prompts get
    # offsets near 0, clearly different ones keep theirs. The noise is the binomial variance of each
    # prompt's leading share at Agresti-Coull shares (z^2/2 images moved toward balance), so a prompt
    # with every image in one class still counts as noisy.
    z2 = _z(LEVEL, 2) ** 2
    leading = np.abs(shares - 1.0 / n_classes).max(axis=-1) + 1.0 / n_classes
    adjusted = (leading * n + z2 / 2) / (n + z2)
    scale = n_classes / (n_classes - 1)
    noise = (weights * scale**2 * adjusted * (1 - adjusted) / np.maximum(n, 1)).sum(axis=-1)
    deviations = np.where(valid, estimate - point[..., None], 0.0)
    spread = (deviations**2).sum(axis=-1) / np.maximum(n_valid[..., 0] - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.where(spread > 0, np.clip(1.0 - noise / spread, 0.0, 1.0), 0.0)
    # Where the prompts differ, the mean's low end places each at its estimate, except a prompt that may be
    # balanced, which it places at 0: such an estimate is biased up, and the estimate's expectation is
    # flat near 0, so DR lent to a possibly balanced prompt would make the tested mean look smaller than
    # it is and push the low end up past the truth (pictoworld's gender: 5 skewed, 3 balanced).
    placed = np.where(valid & sure, estimate, 0.0)
    placed = np.where(valid, placed - (weights * placed).sum(axis=-1, keepdims=True), 0.0)
    return _Run(
        n=n,
        weights=weights,
        point=point,
        lean=lean,
        lean_even=lean_even,
        offsets=keep[..., None] * deviations,
        low_end_offsets=keep[..., None] * placed,
        replicate_shares=rep_shares,
    )


def _config_shares(run: _Run, mean: np.ndarray, offsets: np.ndarray, lean: np.ndarray) -> np.ndarray:
    """Share vectors ``(K, ..., P, C)`` of prompts whose DRs average ``mean`` ``(K, ...)``.

    The prompts' DRs are ``offsets`` (the estimates' deviations from their mean, shrunk as in
    :func:`_prepare`, or 0 for an even spread) shifted, then kept in 0..1, to that mean; each prompt's
    shares deviate along ``lean`` (``(..., P, C)``, or ``(K, ..., P, C)``, scaled to DR 1).
    """
    low = np.full(mean.shape, -1.0)
    high = np.full(mean.shape, 2.0)
    for _ in range(40):  # the shift c with mean(clip(c + offset)) = mean, monotone in c
        shift = (low + high) / 2
        drs = np.clip(shift[..., None] + offsets, 0.0, 1.0)
        below = (run.weights * drs).sum(axis=-1) < mean
        low = np.where(below, shift, low)
        high = np.where(below, high, shift)
    drs = np.clip(high[..., None] + offsets, 0.0, 1.0)
    n_classes = lean.shape[-1]
    shares = np.clip(1.0 / n_classes + drs[..., None] * lean, 0.0, 1.0)
    return shares / shares.sum(axis=-1, keepdims=True)


def _implied_correlation(threshold: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Correlations ``(..., Q, Q)`` of the indicators {X_p < h_p} of Q standard normals that share one
    factor (every pair correlates ``rho``, shape ``(...)``); ``threshold`` ``(..., Q)`` holds the h_p.

    Plackett's identity: the derivative of P(X < h, Y < k) in the correlation is the bivariate normal
    density at (h, k), so the indicators' covariance is that density integrated from 0 to rho
    (Gauss-Legendre, 16 nodes: exact to about 1e-6 for |rho| < 0.999).
    """
    nodes, weights = _LEGENDRE
    h = threshold[..., :, None, None]
    k = threshold[..., None, :, None]
    r = rho[..., None, None, None] * (nodes + 1) / 2
    one_less = 1 - r * r
    density = np.exp(-(h * h - 2 * r * h * k + k * k) / (2 * one_less)) / (2 * np.pi * np.sqrt(one_less))
    covariance = rho[..., None, None] / 2 * (density * weights).sum(axis=-1)
    p = special.ndtr(threshold)
    sd = np.sqrt(p * (1 - p))
    return covariance / (sd[..., :, None] * sd[..., None, :])


def _one_factor_target(shares: np.ndarray, n: np.ndarray, goal: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The correlations ``(..., Q, Q)`` that one latent factor per seed gives prompts of these leading-class
    ``shares`` ``(..., Q)``, its strength chosen so that they average ``goal`` ``(...)`` over ``pairs``.

    A seed's noise pushes every prompt the same way, but how far a prompt's share follows depends on
    its shares: two balanced prompts correlate more than a 0.85 and a 0.15 one under the same factor
    (0.71 against 0.18 at a latent correlation of 0.9). Shares are Agresti-Coull adjusted (z^2/2 images
    moved toward balance), so a prompt with every image in one class still gets a correlation.
    """
    z2 = _z(LEVEL, 2) ** 2
    threshold = special.ndtri((shares * n + z2 / 2) / (n + z2))
    count = np.maximum(pairs.sum(axis=(-2, -1)), 1)
    low = np.full(goal.shape, -0.99)
    high = np.full(goal.shape, 0.999)
    for _ in range(30):  # the average implied correlation grows with the factor's strength
        rho = (low + high) / 2
        average = np.where(pairs, _implied_correlation(threshold, rho), 0.0).sum(axis=(-2, -1)) / count
        below = average < goal
        low = np.where(below, rho, low)
        high = np.where(below, high, rho)
    return _implied_correlation(threshold, high)


def _seed_noise(runs: list[_Run], cautious: bool) -> np.ndarray:
    """Standard normal draws ``(..., G, Q, C)``, correlated across the Q prompts of all runs as the seeds
    make the prompts' class shares correlate.

    The correlation between two prompts is that of their shares of the audit's leading class (the one
    whose deviation drives the DR) over the redraws by seed, which pick every prompt of a seed
    together: prompts that share each seed's noise correlate, prompts redrawn apart do not. Where a
    prompt's share never varies over the redraws (every image in one class) it shows none and gets
    the target below (1 if no pair varies: every prompt moving as one, the widest case).

    Each pair's correlation comes from the audit's S seeds, so it is noisy, and the noise matters: at
    balance a prompt's DR moves with the square of its share's deviation, so a correlation of either
    sign widens the mean's spread, and one too low leaves the mean's upper tail too short. Empirical
    Bayes: the pairs are pulled toward a target by the share of their spread about it that sampling
    noise, (1 - r^2)^2 / (S - 1), explains. For one run the target is what one latent factor per seed
    gives prompts of their shares (:func:`_one_factor_target`), so that a skewed prompt and a balanced
    one are not pulled toward the correlation of two balanced ones; for the joint redraws of two runs
    (a difference), which may be paired or not, it is the pairs' mean correlation. The target's level is
    uncertain too; with ``cautious`` (the mean of one run, where more correlation only widens) its
    average is taken half a standard error above the pairs' mean, which at 8-16 seeds keeps the spread
    from being too small.
    """
    reps = np.concatenate([r.replicate_shares for r in runs], axis=-2)  # (B, ..., Q, C)
    n_classes = reps.shape[-1]
    pooled = reps.mean(axis=(0, -2))  # (..., C)
    lead = np.abs(pooled - 1.0 / n_classes).argmax(axis=-1)
    share = np.take_along_axis(reps, np.broadcast_to(lead[None, ..., None, None], (*reps.shape[:-1], 1)), -1)
    share = share[..., 0]  # (B, ..., Q)
    centred = share - share.mean(axis=0, keepdims=True)
    cov = np.einsum("b...p,b...q->...pq", centred, centred) / max(reps.shape[0] - 1, 1)
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    moves = var > 1e-12
    both = moves[..., :, None] & moves[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(cov / np.sqrt(var[..., :, None] * var[..., None, :]))
    q = reps.shape[-2]
    off_diagonal = both & ~np.eye(q, dtype=bool)
    known = off_diagonal.sum(axis=(-2, -1))
    pairs = np.maximum(known, 1)
    mean_corr = np.where(known > 0, np.where(off_diagonal, corr, 0.0).sum(axis=(-2, -1)) / pairs, 1.0)
    n = np.concatenate([r.n for r in runs], axis=-1)
    seeds = n.max(axis=-1)
    noise_var = np.where(off_diagonal, (1 - corr**2) ** 2, 0.0).sum(axis=(-2, -1)) / pairs
    noise_var = np.where(known > 0, noise_var, 1.0) / np.maximum(seeds - 1, 1)
    goal = mean_corr
    if cautious:
        # half a standard error of the mean of independent pairs (calibrated by simulation: at 8 seeds
        # a whole one makes the interval wider than it needs to be, none leaves it too narrow)
        standard_error = np.sqrt(noise_var / (pairs / 2))
        raised = np.minimum(mean_corr + CORRELATION_CAUTION * standard_error, 1.0)
        goal = np.where(known > 0, raised, mean_corr)
    if len(runs) == 1:
        averaged_over = np.where((known > 0)[..., None, None], off_diagonal, ~np.eye(q, dtype=bool))
        target = _one_factor_target(share.mean(axis=0), n, goal, averaged_over)
    else:
        target = np.broadcast_to(goal[..., None, None], corr.shape)
    residual = np.where(off_diagonal, corr - target, 0.0)
    spread = (residual**2).sum(axis=(-2, -1)) / pairs
    with np.errstate(invalid="ignore", divide="ignore"):
        keep = np.where(spread > 0, np.clip(1.0 - noise_var / spread, 0.0, 1.0), 0.0)
    corr = np.clip(np.where(both, target + keep[..., None, None] * residual, target), -1.0, 1.0)
    idx = np.arange(q)
    corr[..., idx, idx] = 1.0
    # the nearest positive semi-definite matrix (filled and shrunk entries may leave it indefinite)
    values, vectors = np.linalg.eigh(corr)
    factor = vectors * np.sqrt(np.maximum(values, 0.0))[..., None, :]  # (..., Q, Q)
    base = np.random.default_rng(_NULL_SEED).standard_normal((NULL_DRAWS, q, n_classes))
    return np.einsum("...qr,grc->...gqc", factor, base)


def _binomial_quantile(z: np.ndarray, n: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Counts with the Binomial(n, share) distribution at the standard normal quantiles ``z``.

    ``z`` is ``(K, ..., G, Q, C)``; ``n`` ``(..., Q)`` and ``share`` ``(K, ..., Q, C)`` give one
    distribution per prompt and class. The normal approximation gives a first count, which steps to
    the exact quantile (the least k with cumulative probability at least Phi(z)) from a table of each
    distribution's cumulative probabilities.
    """
    size = int(n.max()) if n.size else 0
    k = np.arange(size + 1)
    n_full = np.broadcast_to(n[..., None], share.shape)  # (K, ..., Q, C)
    log_pmf = (
        special.gammaln(n_full[..., None] + 1)
        - special.gammaln(k + 1)
        - special.gammaln(np.maximum(n_full[..., None] - k, 0) + 1)
        + special.xlogy(k, share[..., None])
        + special.xlog1py(n_full[..., None] - k, -share[..., None])
    )
    cdf = np.cumsum(np.where(k <= n_full[..., None], np.exp(log_pmf), 0.0), axis=-1).ravel()
    offset = (np.arange(n_full.size).reshape(n_full.shape) * (size + 1))[..., None, :, :]
    top = n_full[..., None, :, :]
    u = np.minimum(special.ndtr(z), 1.0 - 1e-12)
    mean, sd = (n_full * share)[..., None, :, :], np.sqrt(n_full * share * (1 - share))[..., None, :, :]
    count = np.clip(np.floor(mean + z * sd), 0, top).astype(np.int64)
    while True:  # a step or two from the normal approximation to the exact quantile
        up = (cdf[offset + count] < u) & (count < top)
        down = (count > 0) & (cdf[offset + np.maximum(count - 1, 0)] >= u)
        if not (up.any() or down.any()):
            return count
        count = count + up - down


def _null_draws(
    runs: list[_Run], signs: list[float], shares: list[np.ndarray], noise: np.ndarray, plugin: bool = False
) -> np.ndarray:
    """Draws ``(K, ..., G)`` of the signed sum of the runs' mean estimates (``plugin``: mean plug-in DRs)
    when the true shares are ``shares`` (one ``(K, ..., P, C)`` per run) and the seeds correlate
    prompts as ``noise`` does.

    Each prompt's class counts are exactly binomial at the true shares; they are tied together by a
    Gaussian copula: within a prompt as a multinomial's counts covary, across prompts as the seeds
    make them (:func:`_seed_noise`).
    """
    config = np.concatenate(shares, axis=-2)  # (K, ..., Q, C)
    n = np.concatenate([r.n for r in runs], axis=-1)  # (..., Q)
    weights = np.concatenate([r.weights * s for r, s in zip(runs, signs, strict=True)], axis=-1)
    n_classes = config.shape[-1]
    if n_classes == 2:
        # one class decides: the other's count is the rest, and both give the same squared deviation
        z = noise[..., :1]
        config = config[..., :1]
    else:
        # multinomial covariance (diag(s) - s s^T) / N, each class scaled back to unit variance
        root = np.sqrt(config)[..., None, :, :]
        mixed = root * noise - config[..., None, :, :] * (root * noise).sum(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.nan_to_num(mixed / np.sqrt(config * (1 - config))[..., None, :, :])
    z = np.broadcast_to(z, (*config.shape[:-2], *noise.shape[-3:-1], config.shape[-1]))
    counts = _binomial_quantile(z, n, config)
    size = n[..., None, :, None]
    p = counts / np.maximum(size, 1)
    variance = 0.0 if plugin else np.where(size > 1, p * (1 - p) / np.maximum(size - 1, 1), 0.0)
    squared = np.maximum((p - 1.0 / n_classes) ** 2 - variance, 0.0)
    estimate = np.sqrt(squared.max(axis=-1)) * n_classes / (n_classes - 1)  # (K, ..., G, Q)
    return (estimate * weights[..., None, :]).sum(axis=-1)


def _null_quantiles(
    runs: list[_Run], signs: list[float], shares: list[np.ndarray], noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """2.5% and 97.5% points, ``(K, ...)`` each, of :func:`_null_draws` of the estimates."""
    tail = (1.0 - LEVEL) / 2
    low, high = np.quantile(_null_draws(runs, signs, shares, noise), [tail, 1.0 - tail], axis=-1)
    return low, high


def _invert(
    observed: np.ndarray, quantiles: Callable, bottom: float, top: float
) -> tuple[np.ndarray, np.ndarray]:
    """The 95% interval of every value t in [bottom, top] that a test of "the target is t" accepts.

    ``quantiles(t)`` maps targets ``(2, ...)`` (candidates for the low end, then for the high end) to
    the 2.5% and 97.5% points of the estimate's sampling
    distribution there, both increasing in t. The low end is the least t whose 97.5% point reaches the
    observed estimate (``bottom`` if even that of ``bottom`` does), searched below the estimate; the
    high end the largest t whose 2.5% point does not pass it (``top`` if even that of ``top`` does
    not), searched above it. Both ends are found together: four halvings of the bracket, then secant
    steps safeguarded by halving (the quantiles are nearly linear in t there); each end is the last
    accepted t, within about 0.005 of the exact one and on its conservative side.
    """
    shape = observed.shape
    edge_low, edge_high = quantiles(np.stack([np.full(shape, bottom), np.full(shape, top)]))
    at_estimate_low, at_estimate_high = quantiles(np.stack([observed, observed]))
    # f(t) >= 0 accepts t: the 97.5% point minus the estimate (low end), the estimate minus the 2.5%
    # point (high end), negated there so that both searches look for an increasing sign change
    left = np.stack([np.full(shape, bottom), observed])
    right = np.stack([observed, np.full(shape, top)])
    f_left = np.stack([edge_high[0] - observed, at_estimate_low[1] - observed])
    f_right = np.stack([at_estimate_high[0] - observed, edge_low[1] - observed])
    previous = np.zeros(left.shape)
    stalled = np.zeros(left.shape, dtype=bool)
    for step in range(_INVERSION_STEPS):
        gap = f_right - f_left
        with np.errstate(invalid="ignore", divide="ignore"):
            secant = right - f_right * (right - left) / gap
        # halve the bracket first and whenever the same end moved last time (the secant can stall
        # on a flat stretch, e.g. where most prompts' estimates are 0); otherwise the secant point
        use_secant = (step >= _BISECTION_FIRST) & (gap > 0) & ~stalled & np.isfinite(secant)
        t = np.clip(np.where(use_secant, secant, (left + right) / 2), left, right)
        low_q, high_q = quantiles(t)
        f_t = np.stack([high_q[0] - observed, low_q[1] - observed])
        positive = np.stack([f_t[0] >= 0, f_t[1] > 0])
        moved = np.where(positive, 1.0, -1.0)
        stalled = use_secant & (moved == previous)
        previous = moved
        right = np.where(positive, t, right)
        f_right = np.where(positive, f_t, f_right)
        left = np.where(positive, left, t)
        f_left = np.where(positive, f_left, f_t)
    low = np.where(at_estimate_high[0] < observed, observed, right[0])
    low = np.where(edge_high[0] >= observed, bottom, low)
    high = np.where(at_estimate_low[1] > observed, observed, left[1])
    high = np.where(edge_low[1] <= observed, top, high)
    return low, np.maximum(high, low)


def mean_deviation_ratio_interval(
    counts_pc: ArrayLike, replicates: ArrayLike, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of the mean DR over the prompts with images; NaN where no prompt has any.

    ``counts_pc`` (..., P, C) are an audit's counts (leading dimensions: independent audits);
    ``replicates`` (B, ..., P, C) are bootstrap redraws of them (by seed: see
    :func:`diffsteer.metrics.bootstrap.resample_by_seed`), used for how the prompts' shares correlate
    and how far apart the prompts' DRs are. The estimate is the mean of the per-prompt estimates; the
    interval holds every mean DR that a test at that mean accepts (module docstring). An audit with one
    prompt that has images gets that prompt's own interval.
    """
    _check_level(level)
    counts = np.asarray(counts_pc, dtype=np.float64)
    if counts.shape[-2] == 0:  # no prompts at all
        nothing = np.full(counts.shape[:-2], np.nan)
        return nothing, nothing.copy(), nothing.copy()
    point, low, high = _inverted_interval(counts, replicates)
    valid = counts.sum(axis=-1) > 0
    n_valid = valid.sum(axis=-1)
    single_low, single_high = deviation_ratio_interval(counts)
    alone = n_valid == 1
    low = np.where(alone, _mean_over_valid(single_low, valid), low)
    high = np.where(alone, _mean_over_valid(single_high, valid), high)
    empty = n_valid == 0
    point = np.where(empty, np.nan, point)
    # the interval always holds its estimate (the test's discreteness can leave it a hair outside)
    low = np.where(empty, np.nan, np.minimum(low, point))
    high = np.where(empty, np.nan, np.maximum(high, point))
    return point, low, high


def _single_prompt_inversion(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The test-inversion interval of each prompt alone: counts ``(..., C)`` -> (low, high), NaN if N = 0."""
    one = counts[..., None, :]  # every prompt an audit of one prompt; no other prompt to correlate with
    point, low, high = _inverted_interval(one, one[None])
    empty = counts.sum(axis=-1) == 0
    return np.where(empty, np.nan, np.minimum(low, point)), np.where(empty, np.nan, np.maximum(high, point))


def _inverted_interval(
    counts: np.ndarray, replicates: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(estimate, low, high) of the mean DR by the test inversion alone (module docstring)."""
    run = _prepare(counts, replicates)
    noise = _seed_noise([run], cautious=True)

    # The low end is tested at the estimated spread of the prompts' DRs (possibly balanced ones at 0,
    # see _prepare); the high end at an even spread, the least favourable one: the estimate's
    # expectation is convex in a prompt's DR (flat near 0), so spreading the same mean DR unevenly
    # only raises it.
    # With three classes or more, the high end also lets only each prompt's leading class deviate
    # (the others even), which gives the max over classes the least to add.
    offsets = np.stack([run.low_end_offsets, np.zeros_like(run.offsets)])
    lean = np.stack([run.lean, run.lean_even])

    def quantiles(mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _null_quantiles([run], [1.0], [_config_shares(run, mean, offsets, lean)], noise)

    low, high = _invert(run.point, quantiles, 0.0, 1.0)
    return run.point, low, high


def _mean_over_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    count = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


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
    ``n`` is 0 or not even DR 1 is distinguishable. For three classes or more it uses the share box,
    a little wider than the interval reported for them, so it errs on the side of a larger DR.
    """
    if n < 1:
        return None
    grid = np.linspace(0.0, 1.0, 1001)
    low, _ = _box_interval(np.stack([_favoured_counts(n, d, n_classes) for d in grid]))
    above = np.flatnonzero(low > 0)
    return float(grid[above[0]]) if above.size else None


def _worst_half_width(n: int, n_classes: int) -> float:
    """Largest half-width of the per-prompt interval over true DRs 0..1 at expected counts."""
    grid = np.linspace(0.0, 1.0, 101)
    low, high = _box_interval(np.stack([_favoured_counts(n, d, n_classes) for d in grid]))
    return float(((high - low) / 2).max())


def plan_images_per_prompt(half_width: float, n_classes: int = 2, max_images: int = 100_000) -> int:
    """Images per prompt for a per-prompt DR interval no wider than ``+-half_width``, whatever the bias.

    The same interval as the audit's, at the counts a prompt of each true DR gives on average; the worst
    case over true DRs decides (it is a fair or mildly skewed prompt). The mean over prompts is
    narrower than this. For three classes or more the share box stands in for the reported interval
    (a simulated test per candidate size would be slow); it is a little wider, so the plan errs on the
    side of more images.
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
