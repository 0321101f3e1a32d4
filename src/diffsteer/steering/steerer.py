"""The steerer: a steering spec resolved against one model, turning each request into a steered one.

Files are found through the steering library, loaded once, and checked against the model (U-Net
fingerprint, block, shape) before the first image, so a direction made for another model fails
before any work. Each steered request carries a JSON description (files by content hash, strengths,
the fair class chosen): it enters the run store's job key, so changing a vector never reuses an
image made with the old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.steering.fair import fair_choices, normalize_target
from diffsteer.steering.files import ANTI_CONCEPT_KIND, KINDS, SteeringFileError
from diffsteer.steering.kinds import method_class
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.method import SteeringMethod
from diffsteer.steering.preset import DEFAULT_FAIR_METHOD, SteeringSpec
from diffsteer.steering.responsible import read_prompt


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class _Loaded:
    path: Path
    digest: str
    method: SteeringMethod


def steering_loader(kind: str):
    """The function that reads a steering file of ``kind`` (hspace, noise or text)."""
    return method_class(kind).load


class Steerer:
    """Applies one :class:`SteeringSpec` to requests for one model."""

    def __init__(
        self,
        spec: SteeringSpec,
        generator: SteeredGenerator,
        *,
        fingerprint: str,
        library: SteeringLibrary,
        axis_classes: Mapping[str, Sequence[str]],
    ) -> None:
        self.spec = spec
        self.generator = generator
        self.fingerprint = fingerprint
        self.library = library
        self.axis_classes = {a: tuple(c) for a, c in axis_classes.items()}
        self._cache: dict[tuple[str, Path], _Loaded] = {}
        # resolve everything now: missing or mismatched files fail before the first image
        self.fixed: list[tuple[_Loaded, float | None]] = [
            (self._load(kind, item.name), item.strength) for kind, item in spec.items()
        ]
        if spec.safe:
            anti = library.anti_concepts(ANTI_CONCEPT_KIND)
            if not anti:
                raise SteeringFileError(
                    "safe generation needs anti-concept h-space vectors (files anti-*.hspace.safetensors); "
                    f"none found in {', '.join(str(f) for f in library.folders)}"
                )
            self.fixed += [(self._load(ANTI_CONCEPT_KIND, str(p)), None) for p in anti]
        self.fair = self._fair_files(spec.fair.axes, spec.fair.method) if spec.fair else {}

    # ---------------------------------------------------------------------------------- loading
    def _load(self, kind: str, name: str) -> _Loaded:
        path = self.library.find(name, kind)
        key = (kind, path.resolve())
        if key not in self._cache:
            method = method_class(kind).load(path)
            method.check_compatible(self.generator, self.fingerprint)
            self._cache[key] = _Loaded(path, file_digest(path), method)
        return self._cache[key]

    def _fair_files(self, axes: Sequence[str], method: str) -> dict[str, dict[str, _Loaded]]:
        out = {}
        for axis in axes:
            if axis not in self.axis_classes:
                raise ValueError(
                    f"fair generation on unknown axis '{axis}'; known: {', '.join(self.axis_classes)}"
                )
            files = self.library.for_axis(axis, self.axis_classes[axis], method)
            out[axis] = {cls: self._load(method, str(path)) for cls, path in files.items()}
        return out

    def _target(self, axis: str) -> dict[str, float] | None:
        fair = self.spec.fair
        classes = self.axis_classes[axis]
        if fair is None or fair.target is None or not set(fair.target) <= set(classes):
            return None
        return normalize_target(classes, fair.target)

    # --------------------------------------------------------------------------------- applying
    def steer(self, request: ImageRequest) -> tuple[ImageRequest, dict[str, Any]]:
        """The steered request and a JSON description of what was applied to it.

        A strength left out (None) is the file's default strength (its calibrated
        ``recommended_weight``, see :mod:`diffsteer.steering.method`).
        """
        applied = list(self.fixed)
        desc: dict[str, Any] = {"kind": "steered"}
        fair_axes = dict(self.fair)
        method = self.spec.fair.method if self.spec.fair else DEFAULT_FAIR_METHOD
        if self.spec.responsible:
            asked = read_prompt(request.prompt)
            for axis in asked.fair_axes:
                if axis in self.axis_classes and axis not in fair_axes:
                    fair_axes.update(self._fair_files([axis], method))
            for concept in asked.avoid:
                applied.append((self._load(ANTI_CONCEPT_KIND, f"anti-{concept}"), None))
            if asked.any:
                desc["responsible"] = {"fair": list(asked.fair_axes), "avoid": list(asked.avoid)}
        if fair_axes:
            axes = list(fair_axes)
            chosen = fair_choices(request.seed, [(self.axis_classes[a], self._target(a)) for a in axes])
            desc["fair"] = dict(zip(axes, chosen, strict=True))
            applied += [(fair_axes[axis][cls], None) for axis, cls in zip(axes, chosen, strict=True)]

        # kinds in the registry's order, so the description (part of the job key) is stable
        applied.sort(key=lambda item: KINDS.index(item[0].method.kind))
        steered = request
        for loaded, strength in applied:
            s = loaded.method.default_strength if strength is None else float(strength)
            steered = loaded.method.apply(steered, s)
            desc.setdefault(loaded.method.kind, []).append(
                {"file": loaded.path.name, "sha": loaded.digest, "strength": s}
            )
        return steered, desc
