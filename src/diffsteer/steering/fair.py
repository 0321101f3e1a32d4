"""Fair assignment: which class's steering each image gets, so shares match a target distribution.

The choice is a pure function of the image's seed: image ``seed`` gets the same class under every run,
batch size and executor. Seeds are mapped through the golden-ratio sequence (a low-discrepancy
sequence), so any run of consecutive seeds splits across classes close to the target, not only in
expectation: 64 consecutive seeds with a uniform two-class target give 32/32 or 31/33. Several axes
at once (a gender vector and a skin-tone vector per image) use the R_d sequence, the d-dimensional
generalisation of the golden ratio, so the axes' choices are independent of each other and every
combination gets its share too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def normalize_target(classes: Sequence[str], target: Mapping[str, float] | None = None) -> dict[str, float]:
    """Target shares over ``classes`` (uniform when None), checked and normalised to sum to 1."""
    if not classes:
        raise ValueError("fair generation needs at least one class")
    if target is None:
        return {c: 1.0 / len(classes) for c in classes}
    unknown = sorted(set(target) - set(classes))
    if unknown:
        raise ValueError(f"target names unknown classes {unknown}; classes are {list(classes)}")
    shares = {c: float(target.get(c, 0.0)) for c in classes}
    if any(v < 0 or not math.isfinite(v) for v in shares.values()):
        raise ValueError(f"target shares must be finite and non-negative, got {shares}")
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("target shares sum to zero")
    return {c: v / total for c, v in shares.items()}


def parse_target(text: str) -> dict[str, float]:
    """Parse ``"woman=0.5,man=0.5"`` into a mapping (shares need not sum to 1)."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"target item '{item.strip()}' must look like class=share")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"target share for '{name.strip()}' is not a number: '{value}'") from None
    if not out:
        raise ValueError("empty target")
    return out


def _pick(u: float, classes: Sequence[str], target: Mapping[str, float] | None) -> str:
    shares = normalize_target(classes, target)
    cumulative = 0.0
    for cls in classes:
        cumulative += shares[cls]
        if u < cumulative:
            return cls
    return classes[-1]  # u within float rounding of 1.0


def fair_choice(seed: int, classes: Sequence[str], target: Mapping[str, float] | None = None) -> str:
    """The class image ``seed`` is steered toward; shares over consecutive seeds follow ``target``."""
    return _pick((int(seed) * _GOLDEN) % 1.0, classes, target)


def _rd_alphas(d: int) -> list[float]:
    # phi_d is the positive root of x^(d+1) = x + 1 (d=1: the golden ratio); alpha_j = phi_d^-j
    phi = 2.0
    for _ in range(60):
        phi = (1.0 + phi) ** (1.0 / (d + 1))
    return [(1.0 / phi) ** (j + 1) for j in range(d)]


def fair_choices(seed: int, axes: Sequence[tuple[Sequence[str], Mapping[str, float] | None]]) -> list[str]:
    """One class per axis for image ``seed``; with one axis this equals :func:`fair_choice`."""
    alphas = _rd_alphas(len(axes))
    return [
        _pick((int(seed) * alpha) % 1.0, classes, target)
        for alpha, (classes, target) in zip(alphas, axes, strict=True)
    ]
