"""How wrong is the auditor? The classifier's confusion matrix and class shares corrected for its errors.

A zero-shot classifier mislabels some images and abstains on others (the "uncertain" class, the
person filter). On a labelled reference set we count, for every true class ``i``, how often the
classifier says class ``j`` or abstains: the confusion matrix ``K`` of shape ``(C, C + 1)``, the last
column being "abstained". The audit's shares are computed over counted images only (abstentions
excluded), so the correction uses the same conditioning: ``M[i, j] = P(said j | truly i, not
abstained)``, the class columns of ``K`` with each row renormalised.

If the classifier errs on audit images as it does on the reference set, the observed shares ``o``
among counted images satisfy ``o = M^T t``, with ``t`` the true shares. The corrected shares are the
constrained least squares solution

    t* = argmin_{t >= 0, sum(t) = 1} || M^T t - o ||^2,

solved exactly by trying every support set of classes (the optimum lies in the relative interior of
one face of the simplex, where it is an equality-constrained least squares problem); feasible
candidates are compared by residual. When ``M^T``'s inverse gives a distribution, that is the answer;
when sampling noise pushes it outside the simplex, the result is the nearest distribution in the
least squares sense (clip-and-renormalise would not minimise anything).

Assumptions, stated in the report: the classifier errs on the audit's images as on the reference
images (no domain shift), and it abstains independently of the true class (the abstained column of
``K`` shows whether the reference set agrees). Intervals come from a bootstrap that redraws both the
audit's counts and the reference set's rows (multinomial, totals fixed), so they include the
uncertainty of the confusion matrix.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ABSTAINED",
    "MAX_CLASSES",
    "AxisCorrection",
    "confusion_matrix",
    "correct_axis",
    "correct_shares",
]

ABSTAINED = "abstained"
"""The confusion matrix's last column: the classifier said "uncertain" or dropped the image."""
MAX_CLASSES = 10  # the exact solver tries 2^C - 1 support sets

_FEASIBLE_TOL = 1e-12


def confusion_matrix(
    truth: Sequence[str], predicted: Sequence[str | None], classes: Sequence[str]
) -> np.ndarray:
    """Counts ``(C, C + 1)``: row = true class, column = predicted class, last column = abstained.

    A prediction that is not one of ``classes`` (None, "uncertain", a drop) counts as abstained.
    A true label that is not one of ``classes`` is an error: the reference set must be labelled with
    the axis's classes.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"got {len(truth)} true labels but {len(predicted)} predictions")
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
    for true, said in zip(truth, predicted, strict=True):
        if true not in index:
            raise ValueError(f"true label {true!r} is not one of the axis classes {list(classes)}")
        counts[index[true], index.get(said, len(classes)) if said is not None else len(classes)] += 1
    return counts


def _class_rates(confusion: np.ndarray) -> np.ndarray:
    """``P(said j | truly i, not abstained)``: the class columns, each row renormalised."""
    counted = confusion[..., :-1]
    totals = counted.sum(axis=-1, keepdims=True)
    return counted / np.where(totals > 0, totals, 1)


def _check_rows(confusion: np.ndarray) -> None:
    if np.any(confusion[:, :-1].sum(axis=1) <= 0):
        raise ValueError(
            "every true class needs at least one reference image the classifier did not abstain on"
        )


def _supports(n_classes: int) -> list[tuple[int, ...]]:
    return [s for k in range(1, n_classes + 1) for s in itertools.combinations(range(n_classes), k)]


def _solve_simplex(rates: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Batched exact least squares on the simplex.

    ``rates`` (..., C, C) from :func:`_class_rates`; ``observed`` (..., C) distributions with a
    broadcastable leading shape. Returns (..., C) shares.
    """
    a = np.swapaxes(rates, -1, -2)  # (..., C, C): observed = a @ t
    shape = np.broadcast_shapes(a.shape[:-2], observed.shape[:-1])
    a = np.broadcast_to(a, (*shape, *a.shape[-2:]))
    o = np.broadcast_to(observed, (*shape, observed.shape[-1]))
    n_classes = a.shape[-1]
    best = np.zeros((*shape, n_classes))
    best_cost = np.full(shape, np.inf)
    for support in _supports(n_classes):
        k = len(support)
        a_s = a[..., list(support)]  # (..., C, k)
        # KKT of min ||a_s x - o||^2 s.t. sum(x) = 1: [[2 a_s^T a_s, 1], [1^T, 0]] [x; lam] = [2 a_s^T o; 1]
        kkt = np.zeros((*shape, k + 1, k + 1))
        kkt[..., :k, :k] = 2.0 * np.swapaxes(a_s, -1, -2) @ a_s
        kkt[..., :k, k] = 1.0
        kkt[..., k, :k] = 1.0
        rhs = np.zeros((*shape, k + 1))
        rhs[..., :k] = 2.0 * (np.swapaxes(a_s, -1, -2) @ o[..., None])[..., 0]
        rhs[..., k] = 1.0
        # pinv rather than solve: a classifier that never says some class makes a_s rank deficient.
        x = (np.linalg.pinv(kkt) @ rhs[..., None])[..., :k, 0]
        feasible = np.all(x >= -_FEASIBLE_TOL, axis=-1) & (np.abs(x.sum(axis=-1) - 1.0) < 1e-9)
        x = np.clip(x, 0.0, None)
        cost = (((a_s @ x[..., None])[..., 0] - o) ** 2).sum(axis=-1)
        better = feasible & (cost < best_cost - 1e-15)
        if np.any(better):
            full = np.zeros((*shape, n_classes))
            full[..., list(support)] = x
            best = np.where(better[..., None], full, best)
            best_cost = np.where(better, cost, best_cost)
    total = best.sum(axis=-1, keepdims=True)
    return best / np.where(total > 0, total, 1.0)


def _check(confusion: np.ndarray, observed: np.ndarray) -> None:
    if confusion.ndim != 2 or confusion.shape[1] != confusion.shape[0] + 1:
        raise ValueError(f"confusion must have shape (C, C + 1); got {confusion.shape}")
    n_classes = confusion.shape[0]
    if not 2 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"share correction supports 2 to {MAX_CLASSES} classes; got {n_classes}")
    if observed.shape[-1] != n_classes:
        raise ValueError(f"observed counts need one entry per class ({n_classes}); got {observed.shape[-1]}")
    if np.any(confusion < 0) or np.any(observed < 0):
        raise ValueError("counts must be non-negative")


def correct_shares(observed: ArrayLike, confusion: ArrayLike) -> np.ndarray:
    """True class shares that best explain what the classifier said, given its confusion.

    ``observed``: counts (or shares) of the classes the classifier gave on the audit's counted
    images (abstentions excluded). ``confusion``: ``(C, C + 1)`` counts from :func:`confusion_matrix`.
    Returns ``(C,)`` shares summing to 1; NaN when nothing was observed.
    """
    k = np.asarray(confusion, dtype=np.float64)
    o = np.asarray(observed, dtype=np.float64)
    _check(k, o)
    _check_rows(k)
    total = o.sum()
    if total <= 0:
        return np.full(k.shape[0], np.nan)
    return _solve_simplex(_class_rates(k), o / total)


def _deviation_ratio(shares: np.ndarray) -> np.ndarray:
    c = shares.shape[-1]
    return np.abs(shares - 1.0 / c).max(axis=-1) / (1.0 - 1.0 / c)


@dataclass
class AxisCorrection:
    """Corrected shares for P prompts of one axis: point estimates and 95% bootstrap intervals."""

    shares: np.ndarray  # (P, C); NaN rows for prompts with no observed images
    shares_ci95: np.ndarray  # (P, C, 2)
    deviation_ratio: np.ndarray  # (P,)
    deviation_ratio_ci95: np.ndarray  # (P, 2)
    mean_deviation_ratio: float
    mean_deviation_ratio_ci95: tuple[float, float]


def correct_axis(
    observed_by_prompt: ArrayLike, confusion: ArrayLike, *, n_boot: int = 1000, seed: int = 0
) -> AxisCorrection:
    """Correct every prompt of one axis and bootstrap intervals (audit counts and reference rows redrawn).

    ``observed_by_prompt``: ``(P, C)`` integer counts of counted images per class. The mean
    deviation ratio weighs prompts equally, like :func:`diffsteer.metrics.mean_deviation_ratio`.
    """
    k = np.asarray(confusion, dtype=np.int64)
    obs = np.asarray(observed_by_prompt, dtype=np.int64)
    if obs.ndim != 2:
        raise ValueError(f"observed counts must have shape (P, C); got {obs.shape}")
    _check(k, obs)
    _check_rows(k)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    rates = _class_rates(k.astype(np.float64))
    n_obs = obs.sum(axis=1)
    empty = n_obs == 0
    o_hat = obs / np.maximum(n_obs, 1)[:, None]
    point = _solve_simplex(rates, o_hat)  # (P, C)
    point[empty] = np.nan

    rng = np.random.default_rng(seed)
    # Redraw the reference rows (B, C, C) and each prompt's counts (B, P, C) from their estimates.
    boot_k = rng.multinomial(k[:, :-1].sum(axis=1), rates, size=(n_boot, k.shape[0]))
    boot_o = rng.multinomial(
        n_obs, np.where(empty[:, None], 1.0 / obs.shape[1], o_hat), size=(n_boot, obs.shape[0])
    )
    boot_rates = boot_k / boot_k.sum(axis=-1, keepdims=True)
    boot = _solve_simplex(boot_rates[:, None], boot_o / np.maximum(n_obs, 1)[None, :, None])  # (B, P, C)
    boot[:, empty] = np.nan

    shares_ci = np.full((*point.shape, 2), np.nan)
    dr_ci = np.full((point.shape[0], 2), np.nan)
    dr = _deviation_ratio(point)
    boot_dr = _deviation_ratio(boot)  # (B, P)
    kept = ~empty
    if np.any(kept):
        shares_ci[kept] = np.stack(np.quantile(boot[:, kept], [0.025, 0.975], axis=0), axis=-1)
        dr_ci[kept] = np.stack(np.quantile(boot_dr[:, kept], [0.025, 0.975], axis=0), axis=-1)
    if np.all(empty):
        mean_dr, mean_ci = float("nan"), (float("nan"), float("nan"))
    else:
        mean_dr = float(np.nanmean(dr))
        boot_mean = np.nanmean(boot_dr[:, ~empty], axis=1)
        lo, hi = np.quantile(boot_mean, [0.025, 0.975])
        mean_ci = (float(lo), float(hi))
    return AxisCorrection(
        shares=point,
        shares_ci95=shares_ci,
        deviation_ratio=dr,
        deviation_ratio_ci95=dr_ci,
        mean_deviation_ratio=mean_dr,
        mean_deviation_ratio_ci95=mean_ci,
    )
