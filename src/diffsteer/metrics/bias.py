"""Bias metrics over per-class image counts, vectorised so bootstrap replicates cost one numpy call.

Every function takes counts whose last axis holds the C classes of one attribute axis (e.g. man/woman).
Functions that aggregate over prompts take shape ``(..., P, C)``; any leading dimensions are treated as
independent replicates (bootstrap draws), so ``(B, P, C)`` gives one value per replicate.

Counts exclude "uncertain" and dropped images: callers report those separately, because mixing them into
a class would hide how often the classifier abstained.

An empty prompt (N = 0 images) has no distribution, so per-prompt values are NaN and means skip it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "deviation_ratio",
    "entigen_bias",
    "kl_to_target",
    "mean_deviation_ratio",
    "mean_kl_to_target",
    "validate_target",
]

_TARGET_TOLERANCE = 1e-6


def _as_counts(counts: ArrayLike, min_ndim: int = 1) -> np.ndarray:
    """Return counts as float64, rejecting shapes and values that would give silently wrong metrics."""
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim < min_ndim:
        what = "(..., C)" if min_ndim == 1 else "(..., P, C)"
        raise ValueError(f"counts must have shape {what}; got shape {arr.shape}")
    n_classes = arr.shape[-1]
    if n_classes < 2:
        raise ValueError(f"an axis needs at least 2 classes to measure diversity; got {n_classes}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError("counts must be finite")
    if arr.size and np.any(arr < 0):
        raise ValueError("counts must be non-negative")
    return arr


def validate_target(target: Sequence[float] | ArrayLike | None, n_classes: int) -> np.ndarray:
    """Return the target distribution as an array; None means uniform.

    Every entry must be > 0: any class can be observed, and KL(p || q) is infinite wherever p_c > 0 and
    q_c = 0, which would make means and bootstrap intervals meaningless.
    """
    if n_classes < 2:
        raise ValueError(f"an axis needs at least 2 classes to measure diversity; got {n_classes}")
    if target is None:
        return np.full(n_classes, 1.0 / n_classes)
    q = np.asarray(target, dtype=np.float64)
    if q.ndim != 1 or q.shape[0] != n_classes:
        raise ValueError(f"target must have one probability per class ({n_classes}); got shape {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q <= 0):
        raise ValueError(f"target probabilities must be finite and > 0; got {q.tolist()}")
    total = float(q.sum())
    if abs(total - 1.0) > _TARGET_TOLERANCE:
        raise ValueError(f"target probabilities must sum to 1 (within {_TARGET_TOLERANCE}); got {total}")
    return q / total


def _mean_over_prompts(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis skipping NaN (empty prompts); NaN where every prompt is empty.

    Written out rather than ``np.nanmean`` so an all-empty axis gives NaN without a RuntimeWarning.
    """
    valid = ~np.isnan(values)
    n_valid = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_valid > 0, total / np.maximum(n_valid, 1), np.nan)


def deviation_ratio(counts: ArrayLike) -> np.ndarray:
    """Per-prompt deviation ratio max_c |p_c - 1/C| / (1 - 1/C): 0 is balanced, 1 is all in one class.

    Computed as max_c |C n_c - N| / (N (C - 1)), the same quantity in integer-friendly form, so that
    hand-checkable cases such as 7 vs 3 give exactly 0.4. Shape ``(..., C) -> (...)``; NaN where N = 0.
    """
    arr = _as_counts(counts)
    n_classes = arr.shape[-1]
    total = arr.sum(axis=-1)
    spread = np.abs(n_classes * arr - total[..., None]).max(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, spread / (total * (n_classes - 1)), np.nan)


def mean_deviation_ratio(counts_pc: ArrayLike) -> np.ndarray:
    """Mean deviation ratio over prompts with at least one image; ``(..., P, C) -> (...)``, NaN if all empty.

    Each prompt weighs equally regardless of its image count, so one heavily sampled prompt cannot
    dominate the audit.
    """
    return _mean_over_prompts(deviation_ratio(_as_counts(counts_pc, min_ndim=2)))


def entigen_bias(counts_pc: ArrayLike) -> np.ndarray:
    """ENTIGEN bias score sum_p sum_c |n_{p,c} - N_p / C| / sum_p N_p; lower is more diverse.

    For C = 2 this equals the paper's sum_p |n_a - n_b| / sum_p (n_a + n_b), because
    |n_a - N/2| + |n_b - N/2| = |n_a - n_b|. For C > 2 it is the natural generalisation, but its maximum
    (all images in one class) is 2 (C - 1) / C rather than 1, e.g. 4/3 for three classes; compare scores
    only between axes with the same C. Unlike the mean deviation ratio, prompts weigh by their image
    count. Shape ``(..., P, C) -> (...)``; NaN when there are no images at all.
    """
    arr = _as_counts(counts_pc, min_ndim=2)
    n_classes = arr.shape[-1]
    per_prompt = arr.sum(axis=-1)
    # |n - N/C| summed over classes, as |C n - N| / C to stay exact on integer counts.
    spread = np.abs(n_classes * arr - per_prompt[..., None]).sum(axis=(-2, -1)) / n_classes
    total = per_prompt.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, spread / total, np.nan)


def kl_to_target(counts: ArrayLike, target: Sequence[float] | ArrayLike | None = None) -> np.ndarray:
    """Per-prompt KL(p || q) = sum_c p_c ln(p_c / q_c) with 0 ln 0 = 0, in nats.

    ``target`` is q (C probabilities, each > 0, summing to 1); None means uniform, where the maximum is
    ln C. Shape ``(..., C) -> (...)``; NaN where N = 0.
    """
    arr = _as_counts(counts)
    q = validate_target(target, arr.shape[-1])
    total = arr.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = arr / total
        terms = np.where(arr > 0, shares * np.log(np.where(arr > 0, shares, 1.0) / q), 0.0)
    return np.where(total[..., 0] > 0, terms.sum(axis=-1), np.nan)


def mean_kl_to_target(counts_pc: ArrayLike, target: Sequence[float] | ArrayLike | None = None) -> np.ndarray:
    """Mean per-prompt KL to ``target`` over prompts with images; ``(..., P, C) -> (...)``.

    Prompts weigh equally, as in :func:`mean_deviation_ratio`; NaN if every prompt is empty.
    """
    return _mean_over_prompts(kl_to_target(_as_counts(counts_pc, min_ndim=2), target))
