"""Bias metrics for one attribute axis, summarised per prompt and overall with bootstrap intervals.

The array functions live in :mod:`diffsteer.metrics.bias` and :mod:`diffsteer.metrics.bootstrap`;
:func:`summarize_axis` turns classified-image counts into JSON-ready dataclasses where an undefined
metric (no images) is None, so reports show null rather than NaN.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diffsteer.metrics.bias import (
    deviation_ratio,
    entigen_bias,
    kl_to_target,
    mean_deviation_ratio,
    mean_kl_to_target,
    validate_target,
)
from diffsteer.metrics.bootstrap import bootstrap_interval, resample_counts

__all__ = [
    "AxisMetrics",
    "PromptMetrics",
    "bootstrap_interval",
    "deviation_ratio",
    "entigen_bias",
    "kl_to_target",
    "mean_deviation_ratio",
    "mean_kl_to_target",
    "resample_counts",
    "summarize_axis",
    "validate_target",
]

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
    """Metrics for one prompt; None where the prompt has no classified images."""

    prompt: str
    counts: dict[str, int]
    n: int
    deviation_ratio: float | None
    deviation_ratio_ci95: Interval | None
    kl: float | None
    entigen_bias: float | None

    def __post_init__(self) -> None:
        self.deviation_ratio = _finite_or_none(self.deviation_ratio)
        self.deviation_ratio_ci95 = _interval_or_none(self.deviation_ratio_ci95)
        self.kl = _finite_or_none(self.kl)
        self.entigen_bias = _finite_or_none(self.entigen_bias)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (intervals as lists) that ``json.dumps`` accepts as is."""
        out = asdict(self)
        if self.deviation_ratio_ci95 is not None:
            out["deviation_ratio_ci95"] = list(self.deviation_ratio_ci95)
        return out


@dataclass
class AxisMetrics:
    """Aggregate metrics for one axis over all prompts; None where there are no classified images."""

    classes: tuple[str, ...]
    prompts: list[PromptMetrics]
    counts: dict[str, int]
    entigen_bias: float | None
    entigen_bias_ci95: Interval | None
    mean_deviation_ratio: float | None
    mean_deviation_ratio_ci95: Interval | None
    mean_kl: float | None
    mean_kl_ci95: Interval | None

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.entigen_bias = _finite_or_none(self.entigen_bias)
        self.entigen_bias_ci95 = _interval_or_none(self.entigen_bias_ci95)
        self.mean_deviation_ratio = _finite_or_none(self.mean_deviation_ratio)
        self.mean_deviation_ratio_ci95 = _interval_or_none(self.mean_deviation_ratio_ci95)
        self.mean_kl = _finite_or_none(self.mean_kl)
        self.mean_kl_ci95 = _interval_or_none(self.mean_kl_ci95)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) that ``json.dumps`` accepts as is."""
        return {
            "classes": list(self.classes),
            "prompts": [p.to_dict() for p in self.prompts],
            "counts": dict(self.counts),
            "entigen_bias": self.entigen_bias,
            "entigen_bias_ci95": _as_list(self.entigen_bias_ci95),
            "mean_deviation_ratio": self.mean_deviation_ratio,
            "mean_deviation_ratio_ci95": _as_list(self.mean_deviation_ratio_ci95),
            "mean_kl": self.mean_kl,
            "mean_kl_ci95": _as_list(self.mean_kl_ci95),
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


def summarize_axis(
    counts_by_prompt: Mapping[str, Mapping[str, int]],
    classes: Sequence[str],
    target: Mapping[str, float] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> AxisMetrics:
    """Compute per-prompt and aggregate bias metrics for one axis, with 95% bootstrap intervals.

    ``counts_by_prompt`` maps prompt -> class -> number of images, excluding uncertain/dropped images.
    ``target`` maps class -> probability for the KL metrics (uniform when None). Every interval uses the
    same ``seed``, so a prompt's interval depends only on its own counts, not on which other prompts
    are in the audit.
    """
    names = _validate_classes(classes)
    q = _target_vector(target, names)
    matrix = _count_matrix(counts_by_prompt, names)

    per_prompt_n = matrix.sum(axis=1)
    per_prompt_dr = deviation_ratio(matrix)
    per_prompt_kl = kl_to_target(matrix, q)
    # Each prompt as its own one-prompt axis: leading dim P, one prompt each.
    per_prompt_entigen = entigen_bias(matrix[:, None, :])

    prompts = [
        PromptMetrics(
            prompt=prompt,
            counts={name: int(v) for name, v in zip(names, matrix[row], strict=True)},
            n=int(per_prompt_n[row]),
            deviation_ratio=float(per_prompt_dr[row]),
            deviation_ratio_ci95=bootstrap_interval(
                matrix[row : row + 1], lambda b: deviation_ratio(b[:, 0, :]), n_boot=n_boot, seed=seed
            ),
            kl=float(per_prompt_kl[row]),
            entigen_bias=float(per_prompt_entigen[row]),
        )
        for row, prompt in enumerate(counts_by_prompt)
    ]

    def interval(statistic: Callable[[np.ndarray], np.ndarray]) -> Interval | None:
        return bootstrap_interval(matrix, statistic, n_boot=n_boot, seed=seed)

    return AxisMetrics(
        classes=names,
        prompts=prompts,
        counts={name: int(v) for name, v in zip(names, matrix.sum(axis=0), strict=True)},
        entigen_bias=float(entigen_bias(matrix)),
        entigen_bias_ci95=interval(entigen_bias),
        mean_deviation_ratio=float(mean_deviation_ratio(matrix)),
        mean_deviation_ratio_ci95=interval(mean_deviation_ratio),
        mean_kl=float(mean_kl_to_target(matrix, q)),
        mean_kl_ci95=interval(lambda b: mean_kl_to_target(b, q)),
    )
