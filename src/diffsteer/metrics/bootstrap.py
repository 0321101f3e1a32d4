"""Bootstrap redraws of an audit's counts: by seed (the default in audits) or image by image.

**By seed** (:func:`resample_by_seed`): image k of every prompt (and of every mitigation) starts from
the same noise, seed + k, so labels of one seed agree across prompts far more often than chance. One
redraw picks seed indices with replacement and keeps every prompt of each picked seed together (a
cluster bootstrap); passing two runs' labels on the same seeds redraws them together (paired).

**Image by image** (:func:`resample_counts`, :func:`bootstrap_interval`), when only counts are known:

Images are resampled with replacement within each prompt, so every replicate keeps each prompt's image
count N_p; that is the same as drawing counts ~ Multinomial(N_p, observed shares) per prompt, which numpy
does for all prompts and replicates in one call. Keeping N_p fixed matters because the audit chose how many
images each prompt gets; resampling across prompts would mix prompts with different expected shares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["bootstrap_interval", "resample_by_seed", "resample_counts", "seed_counts"]

# Replicates are drawn in chunks of at most this many count cells (B * P * C), so large audits do not
# allocate the whole (n_boot, P, C) array plus the statistic's float temporaries at once.
_MAX_CELLS_PER_CHUNK = 1 << 21


def _as_integer_counts(counts_pc: ArrayLike) -> np.ndarray:
    """Return (P, C) int64 counts; multinomial resampling needs whole, non-negative image counts."""
    arr = np.asarray(counts_pc)
    if arr.ndim != 2:
        raise ValueError(f"counts_pc must have shape (P, C); got shape {arr.shape}")
    if arr.shape[1] < 2:
        raise ValueError(f"an axis needs at least 2 classes to measure diversity; got {arr.shape[1]}")
    as_float = arr.astype(np.float64)
    if arr.size and (not np.all(np.isfinite(as_float)) or np.any(as_float < 0)):
        raise ValueError("counts must be finite and non-negative")
    if arr.size and np.any(as_float != np.round(as_float)):
        raise ValueError("counts must be whole numbers of images")
    return as_float.astype(np.int64)


def _chunks(n_boot: int, cells_per_replicate: int) -> Iterator[int]:
    """Yield chunk sizes summing to ``n_boot``, each within the memory budget."""
    per_chunk = max(1, _MAX_CELLS_PER_CHUNK // max(1, cells_per_replicate))
    done = 0
    while done < n_boot:
        size = min(per_chunk, n_boot - done)
        done += size
        yield size


def _draw(rng: np.random.Generator, counts: np.ndarray, size: int) -> np.ndarray:
    """Draw ``size`` stratified replicates of (P, C) counts from the observed per-prompt shares."""
    per_prompt = counts.sum(axis=1)
    # Empty prompts get placeholder uniform shares; Multinomial(0, .) always yields zeros anyway.
    shares = np.where(
        per_prompt[:, None] > 0,
        counts / np.maximum(per_prompt, 1)[:, None],
        1.0 / counts.shape[1],
    )
    return rng.multinomial(per_prompt, shares, size=(size, counts.shape[0]))


def resample_counts(counts_pc: ArrayLike, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Return ``(n_boot, P, C)`` stratified bootstrap replicates of the counts, for custom statistics.

    Uses the same draws as :func:`bootstrap_interval` for the same seed, so both agree.
    """
    counts = _as_integer_counts(counts_pc)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    rng = np.random.default_rng(seed)
    return np.concatenate([_draw(rng, counts, size) for size in _chunks(n_boot, counts.size)], axis=0)


def seed_counts(labels: ArrayLike, n_classes: int) -> np.ndarray:
    """Counts ``(..., P, C)`` from per-seed labels ``(..., P, S)``: class index, or -1 for no label."""
    arr = np.asarray(labels)
    if arr.ndim < 2:
        raise ValueError(f"labels must have shape (P, S); got shape {arr.shape}")
    if arr.size and (arr.min() < -1 or arr.max() >= n_classes):
        raise ValueError(f"labels must be class indices 0..{n_classes - 1} or -1 (no label)")
    return (arr[..., None] == np.arange(n_classes)).sum(axis=-2)


def resample_by_seed(labels: ArrayLike, n_classes: int, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """``(n_boot, ..., P, C)`` counts, each redraw a draw of seed indices with replacement.

    ``labels`` is ``(..., P, S)``: the class index of prompt p's image on seed index s, -1 where it has
    no label (uncertain, dropped, or the prompt has fewer images). Leading dimensions (e.g. two runs
    of a comparison) share the draw of seeds, so they are resampled as pairs.
    """
    arr = np.asarray(labels)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    n_seeds = arr.shape[-1]
    if n_seeds == 0 or arr.size == 0:  # nothing to redraw: every redraw has no images
        return np.zeros((n_boot, *arr.shape[:-1], n_classes), dtype=np.int64)
    onehot = (arr[..., None] == np.arange(n_classes)).astype(np.float64)  # (..., P, S, C)
    moved = np.moveaxis(onehot, -2, 0).reshape(n_seeds, -1)  # (S, rest)
    rng = np.random.default_rng(seed)
    out = []
    per_chunk = max(1, _MAX_CELLS_PER_CHUNK // max(1, n_seeds))
    done = 0
    while done < n_boot:
        size = min(per_chunk, n_boot - done)
        # how often each seed index is picked in a redraw: Multinomial(S, uniform)
        weights = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=size).astype(np.float64)
        out.append((weights @ moved).reshape(size, *arr.shape[:-1], n_classes))
        done += size
    return np.rint(np.concatenate(out, axis=0)).astype(np.int64)


def bootstrap_interval(
    counts_pc: ArrayLike,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic`` over stratified resamples of ``counts_pc`` (P, C).

    ``statistic`` maps ``(B, P, C)`` counts to ``(B,)`` values. Non-finite replicates (e.g. NaN because
    a metric is undefined) are ignored; the result is None when no replicate is finite, e.g. when there
    are no images. Deterministic for a given seed.

    Metrics such as the deviation ratio are bounded below by 0, so near balance the bootstrap
    distribution sits above the point estimate; read intervals near 0 as "consistent with balance".
    """
    counts = _as_integer_counts(counts_pc)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1; got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1; got {level}")
    if counts.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    replicates = []
    for size in _chunks(n_boot, counts.size):
        values = np.asarray(statistic(_draw(rng, counts, size)), dtype=np.float64)
        if values.shape != (size,):
            raise ValueError(
                f"statistic must return shape ({size},) for {size} replicates; got {values.shape}"
            )
        replicates.append(values)
    values = np.concatenate(replicates)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)
