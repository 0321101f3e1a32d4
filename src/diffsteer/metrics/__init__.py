"""Bias metrics for one attribute axis, summarised per prompt and overall with 95% intervals.

The array functions live in :mod:`diffsteer.metrics.bias` (plug-in metrics),
:mod:`diffsteer.metrics.intervals` (the deviation ratio's estimate and interval, docs/intervals.md) and
:mod:`diffsteer.metrics.bootstrap` (redraws by seed or by image). :func:`summarize_labels` (per-seed
labels, as an audit has them) and :func:`summarize_axis` (counts only) turn them into JSON-ready
dataclasses where an undefined metric (no images) is None, so reports show null rather than NaN.

``deviation_ratio`` / ``mean_deviation_ratio`` and their ``_ci95`` are the bias-corrected estimate and
its interval; the plain plug-in (the published formula, biased upwards on small samples) and its
percentile-bootstrap interval stay beside them as ``plugin_*`` for comparison with published numbers.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from diffsteer.metrics.bias import (
    deviation_ratio,
    entigen_bias,
    kl_to_target,
    mean_deviation_ratio,
    mean_kl_to_target,
    validate_target,
)
from diffsteer.metrics.bootstrap import bootstrap_interval, resample_by_seed, resample_counts, seed_counts
from diffsteer.metrics.difference import mean_difference_interval
from diffsteer.metrics.intervals import (
    debiased_deviation_ratio,
    detectable_deviation_ratio,
    deviation_ratio_interval,
    mean_deviation_ratio_interval,
    plan_images_per_prompt,
)

__all__ = [
    "ENTIGEN_LABEL",
    "AxisMetrics",
    "PromptMetrics",
    "bootstrap_interval",
    "debiased_deviation_ratio",
    "detectable_deviation_ratio",
    "deviation_ratio",
    "deviation_ratio_interval",
    "entigen_bias",
    "entigen_label",
    "kl_to_target",
    "mean_deviation_ratio",
    "mean_deviation_ratio_interval",
    "mean_difference_interval",
    "mean_kl_to_target",
    "plan_images_per_prompt",
    "resample_by_seed",
    "resample_counts",
    "seed_counts",
    "summarize_axis",
    "summarize_labels",
    "validate_target",
]

ENTIGEN_LABEL = "ENTIGEN (published two-class score)"


def entigen_label(n_classes: int) -> str:
    """What the ENTIGEN number of an axis is: the paper's score for two classes, a generalisation beyond.

    With C > 2 classes the generalised score sum |n_c - N/C| / N reaches 2 (C - 1) / C, not 1, and on one
    prompt equals 2 (C - 1) / C times the deviation ratio (4/3 for three classes): it is not comparable
    with published two-class scores nor with the DR beside it.
    """
    if n_classes == 2:
        return ENTIGEN_LABEL
    top = 2 * (n_classes - 1) / n_classes
    return (
        f"ENTIGEN generalised to {n_classes} classes (not the published two-class score; "
        f"maximum {top:.3g}, = {top:.3g} x DR on one prompt)"
    )


Interval = tuple[float, float]


def _finite_or_none(value: Any) -> float | None:
    """NaN/inf become None so ``json.dumps`` writes null instead of the non-standard NaN token."""
    if value is None:
        return None
    as_float = float(value)
    return as_float if math.isfinite(as_float) else None


def _interval_or_none(interval: Sequence[float] | None) -> Interval | None:
    if interval is None:
        return None
    low, high = (_finite_or_none(v) for v in interval)
    return None if low is None or high is None else (low, high)


@dataclass
class PromptMetrics:
    """Metrics for one prompt; None where the prompt has no classified images.

    ``deviation_ratio`` is the bias-corrected estimate and ``deviation_ratio_ci95`` its interval
    (:mod:`diffsteer.metrics.intervals`); ``plugin_deviation_ratio`` is the plain plug-in with its
    percentile-bootstrap interval; ``detectable_deviation_ratio`` is the smallest DR an audit of this
    prompt's size tells apart from 0 in a typical run.
    """

    prompt: str
    counts: dict[str, int]
    n: int
    deviation_ratio: float | None
    deviation_ratio_ci95: Interval | None
    kl: float | None
    entigen_bias: float | None
    plugin_deviation_ratio: float | None = None
    plugin_deviation_ratio_ci95: Interval | None = None
    detectable_deviation_ratio: float | None = None

    def __post_init__(self) -> None:
        self.deviation_ratio = _finite_or_none(self.deviation_ratio)
        self.deviation_ratio_ci95 = _interval_or_none(self.deviation_ratio_ci95)
        self.kl = _finite_or_none(self.kl)
        self.entigen_bias = _finite_or_none(self.entigen_bias)
        self.plugin_deviation_ratio = _finite_or_none(self.plugin_deviation_ratio)
        self.plugin_deviation_ratio_ci95 = _interval_or_none(self.plugin_deviation_ratio_ci95)
        self.detectable_deviation_ratio = _finite_or_none(self.detectable_deviation_ratio)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (intervals as lists) that ``json.dumps`` accepts as is."""
        out = asdict(self)
        for key in ("deviation_ratio_ci95", "plugin_deviation_ratio_ci95"):
            out[key] = _as_list(getattr(self, key))
        return out


@dataclass
class AxisMetrics:
    """Aggregate metrics for one axis over all prompts; None where there are no classified images.

    ``resampled_by`` says how the aggregate intervals were redrawn: "seed" (every prompt of a seed
    together) or "image" (each prompt's images independently, when the seeds are not known).
    """

    classes: tuple[str, ...]
    prompts: list[PromptMetrics]
    counts: dict[str, int]
    entigen_bias: float | None
    entigen_bias_ci95: Interval | None
    mean_deviation_ratio: float | None
    mean_deviation_ratio_ci95: Interval | None
    mean_kl: float | None
    mean_kl_ci95: Interval | None
    plugin_mean_deviation_ratio: float | None = None
    plugin_mean_deviation_ratio_ci95: Interval | None = None
    resampled_by: str = "image"

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.entigen_bias = _finite_or_none(self.entigen_bias)
        self.entigen_bias_ci95 = _interval_or_none(self.entigen_bias_ci95)
        self.mean_deviation_ratio = _finite_or_none(self.mean_deviation_ratio)
        self.mean_deviation_ratio_ci95 = _interval_or_none(self.mean_deviation_ratio_ci95)
        self.mean_kl = _finite_or_none(self.mean_kl)
        self.mean_kl_ci95 = _interval_or_none(self.mean_kl_ci95)
        self.plugin_mean_deviation_ratio = _finite_or_none(self.plugin_mean_deviation_ratio)
        self.plugin_mean_deviation_ratio_ci95 = _interval_or_none(self.plugin_mean_deviation_ratio_ci95)

    @property
    def entigen_label(self) -> str:
        return entigen_label(len(self.classes))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) that ``json.dumps`` accepts as is."""
        return {
            "classes": list(self.classes),
            "prompts": [p.to_dict() for p in self.prompts],
            "counts": dict(self.counts),
            "entigen_bias": self.entigen_bias,
            "entigen_bias_ci95": _as_list(self.entigen_bias_ci95),
            "entigen_label": self.entigen_label,
            "mean_deviation_ratio": self.mean_deviation_ratio,
            "mean_deviation_ratio_ci95": _as_list(self.mean_deviation_ratio_ci95),
            "plugin_mean_deviation_ratio": self.plugin_mean_deviation_ratio,
            "plugin_mean_deviation_ratio_ci95": _as_list(self.plugin_mean_deviation_ratio_ci95),
            "mean_kl": self.mean_kl,
            "mean_kl_ci95": _as_list(self.mean_kl_ci95),
            "resampled_by": self.resampled_by,
        }


def _as_list(interval: Interval | None) -> list[float] | None:
    return None if interval is None else list(interval)


def _validate_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of class names, not a single string")
    names = tuple(classes)
    if len(names) < 2:
        raise ValueError(f"an axis needs at least 2 classes to measure diversity; got {list(names)}")
    duplicates = sorted({c for c in names if names.count(c) > 1})
    if duplicates:
        raise ValueError(f"duplicate class names: {duplicates}")
    return names


def _count_matrix(counts_by_prompt: Mapping[str, Mapping[str, int]], classes: tuple[str, ...]) -> np.ndarray:
    """(P, C) int64 counts in ``classes`` order; a missing class is 0, an unknown class is an error."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(counts_by_prompt), len(classes)), dtype=np.int64)
    for row, (prompt, counts) in enumerate(counts_by_prompt.items()):
        for name, value in counts.items():
            if name not in index:
                raise ValueError(
                    f"class {name!r} in counts for prompt {prompt!r} is not one of the axis classes "
                    f"{list(classes)}; exclude uncertain/dropped images before computing metrics"
                )
            if isinstance(value, bool):
                raise TypeError(f"count for {name!r} in prompt {prompt!r} must be an integer; got {value!r}")
            try:
                number = operator.index(value)
            except TypeError as exc:
                raise TypeError(
                    f"count for {name!r} in prompt {prompt!r} must be an integer; got {value!r}"
                ) from exc
            if number < 0:
                raise ValueError(f"count for {name!r} in prompt {prompt!r} is negative: {number}")
            matrix[row, index[name]] = number
    return matrix


def _target_vector(target: Mapping[str, float] | None, classes: tuple[str, ...]) -> np.ndarray:
    """Target probabilities in ``classes`` order; every class must be named exactly once."""
    if target is None:
        return validate_target(None, len(classes))
    unknown = [name for name in target if name not in classes]
    if unknown:
        raise ValueError(f"target names classes not on the axis: {unknown}; axis classes are {list(classes)}")
    missing = [name for name in classes if name not in target]
    if missing:
        raise ValueError(f"target is missing probabilities for classes: {missing}")
    return validate_target([float(target[name]) for name in classes], len(classes))


def _percentile(values: np.ndarray, level: float = 0.95) -> Interval | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def _summarize(
    prompts: Sequence[str],
    matrix: np.ndarray,
    replicates: np.ndarray,
    names: tuple[str, ...],
    q: np.ndarray,
    resampled_by: str,
    n_boot: int,
    seed: int,
) -> AxisMetrics:
    """Every metric from the (P, C) counts and (B, P, C) redraws of them."""
    per_prompt_n = matrix.sum(axis=1)
    plugin_dr = deviation_ratio(matrix)
    estimate = debiased_deviation_ratio(matrix)
    low, high = deviation_ratio_interval(matrix)
    per_prompt_kl = kl_to_target(matrix, q)
    # Each prompt as its own one-prompt axis: leading dim P, one prompt each.
    per_prompt_entigen = entigen_bias(matrix[:, None, :])
    detectable = {int(n): detectable_deviation_ratio(int(n), len(names)) for n in set(per_prompt_n.tolist())}
    rows = []
    for row, prompt in enumerate(prompts):
        empty = per_prompt_n[row] == 0
        rows.append(
            PromptMetrics(
                prompt=prompt,
                counts={name: int(v) for name, v in zip(names, matrix[row], strict=True)},
                n=int(per_prompt_n[row]),
                deviation_ratio=float(estimate[row]),
                deviation_ratio_ci95=None if empty else (float(low[row]), float(high[row])),
                kl=float(per_prompt_kl[row]),
                entigen_bias=float(per_prompt_entigen[row]),
                plugin_deviation_ratio=float(plugin_dr[row]),
                # the same image-by-image percentile interval as before issue 22, for comparison
                plugin_deviation_ratio_ci95=bootstrap_interval(
                    matrix[row : row + 1], lambda b: deviation_ratio(b[:, 0, :]), n_boot=n_boot, seed=seed
                ),
                detectable_deviation_ratio=None if empty else detectable[int(per_prompt_n[row])],
            )
        )
    mean_point, mean_low, mean_high = (float(v) for v in mean_deviation_ratio_interval(matrix, replicates))
    return AxisMetrics(
        classes=names,
        prompts=rows,
        counts={name: int(v) for name, v in zip(names, matrix.sum(axis=0), strict=True)},
        entigen_bias=float(entigen_bias(matrix)),
        entigen_bias_ci95=_percentile(entigen_bias(replicates)),
        mean_deviation_ratio=mean_point,
        mean_deviation_ratio_ci95=(mean_low, mean_high),
        mean_kl=float(mean_kl_to_target(matrix, q)),
        mean_kl_ci95=_percentile(mean_kl_to_target(replicates, q)),
        plugin_mean_deviation_ratio=float(mean_deviation_ratio(matrix)),
        plugin_mean_deviation_ratio_ci95=_percentile(mean_deviation_ratio(replicates)),
        resampled_by=resampled_by,
    )


def summarize_axis(
    counts_by_prompt: Mapping[str, Mapping[str, int]],
    classes: Sequence[str],
    target: Mapping[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> AxisMetrics:
    """Per-prompt and aggregate bias metrics for one axis from counts alone, with 95% intervals.

    ``counts_by_prompt`` maps prompt -> class -> number of images, excluding uncertain/dropped images.
    ``target`` maps class -> probability for the KL metrics (uniform when None). Without seeds, the
    aggregate intervals redraw each prompt's images independently (``resampled_by`` "image"); an audit
    knows its seeds and uses :func:`summarize_labels`, which keeps a seed's prompts together.
    """
    names = _validate_classes(classes)
    q = _target_vector(target, names)
    matrix = _count_matrix(counts_by_prompt, names)
    replicates = resample_counts(matrix, n_boot, seed=seed)
    return _summarize(list(counts_by_prompt), matrix, replicates, names, q, "image", n_boot, seed)


def summarize_labels(
    labels: ArrayLike,
    classes: Sequence[str],
    prompts: Sequence[str],
    target: Mapping[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> AxisMetrics:
    """Metrics from per-seed labels ``(P, S)``: prompt p's class index on seed index s, -1 for no label.

    Column s must be the same seed for every prompt (image k of a prompt starts from seed + k), so the
    aggregate intervals can redraw seeds with every prompt of a seed together (``resampled_by`` "seed").
    """
    names = _validate_classes(classes)
    q = _target_vector(target, names)
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.shape[0] != len(prompts):
        raise ValueError(f"labels must have shape (prompts={len(prompts)}, seeds); got shape {arr.shape}")
    matrix = seed_counts(arr, len(names))
    replicates = resample_by_seed(arr, len(names), n_boot, seed=seed)
    return _summarize(list(prompts), matrix, replicates, names, q, "seed", n_boot, seed)
