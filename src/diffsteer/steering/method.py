"""The one interface every steering kind implements, so the code that applies steering never asks which kind.

An h-space vector, an initial-noise direction and a text-embedding offset differ in what they change
(the U-Net bottleneck, the initial noise, the prompt embeddings), but the steerer, the library, the
sweeps and the calibration only need the same few things of each: which model it fits, how to add it
to a request at a strength, its default strength, which class of which axis it names, and how to
save it. Each kind's class provides them (``HSpaceVector``, ``NoiseDirection``, ``TextOffset``);
``steering.kinds`` maps the file kind to its class.

Strength: a multiple of the learned tensor (for noise directions, in noise standard deviations along
the unit direction). The default strength is stored in the file's metadata as ``recommended_weight``
and set by the fair-mixture calibration (:mod:`diffsteer.experiments.calibrate`), the same rule for
every kind; a file without one uses 1 (the learned tensor as it is), except noise directions, whose
older files always carried a weight.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from diffsteer.generate import ImageRequest

DEFAULT_STRENGTH_KEY = "recommended_weight"
"""Metadata key of the default strength (the same key for every kind)."""


@runtime_checkable
class SteeringMethod(Protocol):
    """A learned steering of one concept, applied to requests at a strength."""

    kind: ClassVar[str]  # the file kind: ``<concept>.<kind>.safetensors``
    strength_unit: ClassVar[str]  # what a strength of 1 means, stored in sweeps
    calibration_strengths: ClassVar[tuple[float, ...]]  # the grid the calibration sweeps by default

    concept: str
    metadata: dict[str, Any]

    @property
    def axis(self) -> str | None: ...

    @property
    def class_name(self) -> str | None: ...

    @property
    def default_strength(self) -> float: ...

    def check_compatible(self, generator: Any, fingerprint: str) -> None:
        """Raise SteeringMismatchError (one line) unless this steering fits the generator's model."""

    def apply(self, request: ImageRequest, strength: float | None = None) -> ImageRequest:
        """``request`` with this steering added at ``strength`` (the default strength when None)."""

    def digest(self) -> str:
        """A short content hash of the tensors: it names the steering in run identities."""

    def set_default_strength(self, strength: float, *, rule: str, record: Mapping[str, Any]) -> None:
        """Store a calibrated default strength, the rule that chose it and its record in the metadata."""

    def save(self, directory: Path | str) -> Path:
        """Write ``<directory>/<concept>.<kind>.safetensors``."""


def add_offset(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of two optional offsets (None is no offset)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def finite_strength(strength: float, what: str) -> float:
    value = float(strength)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {strength}")
    return value


def stored_strength(metadata: Mapping[str, Any], fallback: float = 1.0) -> float:
    """The default strength in a file's metadata, ``fallback`` when it holds none."""
    value = metadata.get(DEFAULT_STRENGTH_KEY)
    return fallback if value is None or value == "" else float(value)


def tensor_digest(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def record_calibration(
    metadata: dict[str, Any], strength: float, rule: str, record: Mapping[str, Any]
) -> None:
    metadata[DEFAULT_STRENGTH_KEY] = float(strength)
    metadata["weight_rule"] = rule
    metadata["weight_calibration"] = dict(record)
