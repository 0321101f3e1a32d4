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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.steering.fair import fair_choices, normalize_target
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.preset import SteeringSpec
from diffsteer.steering.responsible import read_prompt


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class _Loaded:
    path: Path
    digest: str
    obj: Any  # HSpaceVector | NoiseDirection | TextOffset


def steering_loader(kind: str):
    """The function that reads a steering file of ``kind`` (hspace, noise or text)."""
    if kind == "hspace":
        from diffsteer.steering.hspace import load_hspace

        return load_hspace
    if kind == "noise":
        from diffsteer.steering.noise import load_noise_direction

        return load_noise_direction
    from diffsteer.steering.text_embedding import load_text_offset

    return load_text_offset


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
        self.fixed = {
            kind: [(self._load(kind, it.name), it.strength) for it in items]
            for kind, items in (("hspace", spec.hspace), ("noise", spec.noise), ("text", spec.text))
        }
        if spec.safe:
            self.fixed["hspace"] += [(self._load("hspace", str(p)), None) for p in library.anti_concepts()]
            if not library.anti_concepts():
                from diffsteer.steering.files import SteeringFileError

                raise SteeringFileError(
                    "safe generation needs anti-concept h-space vectors (files anti-*.hspace.safetensors); "
                    f"none found in {', '.join(str(f) for f in library.folders)}"
                )
        self.fair = self._fair_files(spec.fair.axes, spec.fair.method) if spec.fair else {}

    # ---------------------------------------------------------------------------------- loading
    def _load(self, kind: str, name: str) -> _Loaded:
        path = self.library.find(name, kind)
        key = (kind, path.resolve())
        if key not in self._cache:
            obj = steering_loader(kind)(path)
            obj.check_compatible(self.generator, self.fingerprint)
            self._cache[key] = _Loaded(path, file_digest(path), obj)
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
    @staticmethod
    def _strength(loaded: _Loaded, kind: str, strength: float | None) -> float:
        if strength is not None:
            return float(strength)
        if kind == "noise":
            return float(
                getattr(loaded.obj, "recommended_weight", None)
                or loaded.obj.metadata.get("recommended_weight", 1.0)
            )
        return 1.0

    def steer(self, request: ImageRequest) -> tuple[ImageRequest, dict[str, Any]]:
        """The steered request and a JSON description of what was applied to it."""
        applied: dict[str, list[tuple[_Loaded, float | None]]] = {k: list(v) for k, v in self.fixed.items()}
        desc: dict[str, Any] = {"kind": "steered"}
        fair_axes = dict(self.fair)
        method = self.spec.fair.method if self.spec.fair else "hspace"
        if self.spec.responsible:
            asked = read_prompt(request.prompt)
            for axis in asked.fair_axes:
                if axis in self.axis_classes and axis not in fair_axes:
                    fair_axes.update(self._fair_files([axis], method))
            for concept in asked.avoid:
                applied["hspace"].append((self._load("hspace", f"anti-{concept}"), None))
            if asked.any:
                desc["responsible"] = {"fair": list(asked.fair_axes), "avoid": list(asked.avoid)}
        if fair_axes:
            axes = list(fair_axes)
            chosen = fair_choices(request.seed, [(self.axis_classes[a], self._target(a)) for a in axes])
            desc["fair"] = dict(zip(axes, chosen, strict=True))
            for axis, cls in zip(axes, chosen, strict=True):
                applied[method].append((fair_axes[axis][cls], None))

        tensors: dict[str, torch.Tensor | None] = dict.fromkeys(("hspace", "noise", "text", "pooled"))
        for kind, items in applied.items():
            if not items:
                continue
            listed = []
            for loaded, strength in items:
                s = self._strength(loaded, kind, strength)
                part = loaded.obj.scaled(s) if kind == "hspace" else loaded.obj.offset(s)
                tensors[kind] = _add(tensors[kind], part)
                if kind == "text":  # SDXL text offsets also move the pooled embedding
                    tensors["pooled"] = _add(tensors["pooled"], loaded.obj.pooled_offset(s))
                listed.append({"file": loaded.path.name, "sha": loaded.digest, "strength": s})
            desc[kind] = listed
        steered = replace(
            request,
            hspace=_add(request.hspace, tensors["hspace"]),
            noise_offset=_add(request.noise_offset, tensors["noise"]),
            prompt_embeds_offset=_add(request.prompt_embeds_offset, tensors["text"]),
            pooled_embeds_offset=_add(request.pooled_embeds_offset, tensors["pooled"]),
        )
        return steered, desc


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b
