"""Text-embedding adjustments: an offset on the prompt embeddings that adds a concept to any prompt.

The offset is the difference between the mean prompt embeddings of class prompts and of neutral
prompts, e.g. ``E("a photo of a woman") - E("a photo of a person")``, computed with the pipeline's own
``encode_prompt``. At generation it is added to the conditional prompt embeddings
(``ImageRequest.prompt_embeds_offset``); the unconditional branch and the initial noise are left
alone, so it combines freely with a noise direction (the paper's "joined" adjustment).

Per token or averaged over tokens? Kept **per token** (shape ``(seq, dim)``) by default. CLIP's text
encoder is causal, so the difference is exactly zero on every token before the concept word (the
start token, which the U-Net uses as an attention sink, is never touched), and the concept lives in
the word itself and in every token after it (end and padding tokens summarise the whole prompt);
those tail tokens exist in every prompt, so the offset carries to other prompts of similar length. A
mean over tokens would also shift the start token and dilute the concept over all positions;
``reduce="mean"`` is available and the choice is stored in the file.

SDXL also feeds the U-Net a pooled embedding of the whole prompt (from its second text encoder); the
concept lives there too, so on SDXL the file holds a second tensor, ``pooled``, the same difference
of pooled embeddings, added through ``ImageRequest.pooled_embeds_offset``. Leaving it out would keep
SDXL's global conditioning on the neutral prompt and weaken the offset.

Weight: a multiple of the learned difference; weight 1 on the neutral prompt gives exactly the class
prompt's embeddings (per token), whatever the model's embedding width.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from diffsteer.steering.files import (
    SteeringFileError,
    SteeringMismatchError,
    check_model,
    check_shape,
    meta_json,
    read_steering_file,
    save_steering_file,
    steering_filename,
)
from diffsteer.steering.method import add_offset, record_calibration, stored_strength, tensor_digest

KIND = "text"
REDUCTIONS = ("tokens", "mean")
WEIGHT_UNIT = "difference"
"""Weights are multiples of the learned embedding difference (1 = the class prompt's own embedding)."""


@dataclass
class TextOffset:
    """An offset on the conditional prompt embeddings, shape ``(seq, dim)`` or ``(dim,)``.

    ``pooled`` (SDXL only) is the offset on the pooled prompt embedding, shape ``(pooled_dim,)``.
    """

    kind: ClassVar[str] = KIND
    strength_unit: ClassVar[str] = WEIGHT_UNIT
    calibration_strengths: ClassVar[tuple[float, ...]] = (0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3)

    concept: str
    tensor: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    pooled: torch.Tensor | None = None

    @classmethod
    def load(cls, path: Path | str) -> TextOffset:
        return load_text_offset(path)

    def __post_init__(self) -> None:
        self.tensor = self.tensor.detach().to("cpu", torch.float32)
        if self.tensor.ndim not in (1, 2) or not torch.isfinite(self.tensor).all():
            raise ValueError(f"text offset '{self.concept}' must be a finite (seq, dim) or (dim,) tensor")
        if self.pooled is not None:
            self.pooled = self.pooled.detach().to("cpu", torch.float32)
            if self.pooled.ndim != 1 or not torch.isfinite(self.pooled).all():
                raise ValueError(f"text offset '{self.concept}': pooled must be a finite (dim,) tensor")

    @property
    def axis(self) -> str | None:
        return self.metadata.get("axis") or None

    @property
    def class_name(self) -> str | None:
        return self.metadata.get("class_name") or None

    @property
    def default_strength(self) -> float:
        """The calibrated weight stored in the file; 1 (the class prompt's own embedding) otherwise."""
        return stored_strength(self.metadata)

    def apply(self, request: Any, strength: float | None = None) -> Any:
        """``request`` with the offset added to its prompt embeddings (and pooled ones on SDXL)."""
        w = self.default_strength if strength is None else strength
        return replace(
            request,
            prompt_embeds_offset=add_offset(request.prompt_embeds_offset, self.offset(w)),
            pooled_embeds_offset=add_offset(request.pooled_embeds_offset, self.pooled_offset(w)),
        )

    def digest(self) -> str:
        return tensor_digest(self.tensor, self.pooled)

    def set_default_strength(self, strength: float, *, rule: str, record: Mapping[str, Any]) -> None:
        record_calibration(self.metadata, strength, rule, record)

    def offset(self, weight: float = 1.0) -> torch.Tensor:
        """``weight`` times the learned difference, ready for ``ImageRequest.prompt_embeds_offset``."""
        return _finite(weight) * self.tensor

    def pooled_offset(self, weight: float = 1.0) -> torch.Tensor | None:
        """``weight`` times the pooled difference (``ImageRequest.pooled_embeds_offset``); None off SDXL."""
        return None if self.pooled is None else _finite(weight) * self.pooled

    def check_compatible(self, generator: Any, fingerprint: str, *, source: str | None = None) -> None:
        """Refuse an offset made for another U-Net or another embedding shape (SteeringMismatchError)."""
        where = source or f"text offset '{self.concept}'"
        check_model({k: str(v) for k, v in self.metadata.items()}, fingerprint=fingerprint, source=where)
        seq, dim = generator.prompt_embeds_shape
        expected = (dim,) if self.tensor.ndim == 1 else (seq, dim)
        check_shape(self.tensor, expected, source=where, what="text offset")
        # The fingerprint already ties the file to one U-Net; this names the problem when it does not.
        pooled_dim = generator.pooled_embeds_dim
        if self.pooled is not None and pooled_dim is None:
            raise SteeringMismatchError(f"{where} was learned on SDXL; this model has no pooled embedding")
        if self.pooled is not None:
            check_shape(self.pooled, (pooled_dim,), source=where, what="pooled text offset")

    def save(self, directory: Path | str) -> Path:
        """Write ``<directory>/<concept>.text.safetensors`` (tensor ``offset``, and ``pooled`` on SDXL)."""
        path = Path(directory) / steering_filename(self.concept, KIND)
        meta = dict(self.metadata)
        meta.update(diffsteer_kind=KIND, concept=self.concept, shape=list(self.tensor.shape))
        tensors = {"offset": self.tensor} | ({"pooled": self.pooled} if self.pooled is not None else {})
        return save_steering_file(path, tensors, meta)


def _finite(weight: float) -> float:
    if not math.isfinite(float(weight)):
        raise ValueError(f"text offset weight must be finite, got {weight}")
    return float(weight)


def _mean_embeddings(pipe: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mean conditional prompt embeddings ``(seq, dim)`` of ``prompts``, as the generator computes
    them, and on SDXL the mean pooled embedding ``(pooled_dim,)`` (None elsewhere)."""
    device = getattr(pipe, "_execution_device", None) or pipe.device
    with torch.inference_mode():
        encoded = pipe.encode_prompt(
            prompt=list(prompts), device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    tokens = encoded[0].detach().to("cpu", torch.float32).mean(dim=0)
    pooled = encoded[2].detach().to("cpu", torch.float32).mean(dim=0) if len(encoded) == 4 else None
    return tokens, pooled


def learn_text_offset(
    pipe: Any,
    concept: str,
    prompts: str | Sequence[str],
    neutral_prompts: str | Sequence[str],
    *,
    base_model: str,
    reduce: str = "tokens",
    axis: str | None = None,
) -> TextOffset:
    """Mean embedding of ``prompts`` minus that of ``neutral_prompts`` (see the module docstring)."""
    from diffsteer.models import model_fingerprint

    steering_filename(concept, KIND)  # validate the name before any work
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduce '{reduce}'; expected one of {', '.join(REDUCTIONS)}")
    pos = [prompts] if isinstance(prompts, str) else list(prompts)
    neg = [neutral_prompts] if isinstance(neutral_prompts, str) else list(neutral_prompts)
    if not pos or not neg or not all(p.strip() for p in pos + neg):
        raise ValueError("text offset needs non-empty class and neutral prompts")
    (pos_tokens, pos_pooled), (neg_tokens, neg_pooled) = (_mean_embeddings(pipe, p) for p in (pos, neg))
    diff = pos_tokens - neg_tokens
    pooled = pos_pooled - neg_pooled if pos_pooled is not None and neg_pooled is not None else None
    if reduce == "mean":
        diff = diff.mean(dim=0)
    metadata = {
        "name": concept,
        "base_model": base_model,
        "fingerprint": model_fingerprint(pipe),
        "axis": axis or "",
        "class_name": concept if axis else "",  # how fair generation finds the file for a class
        "prompts": pos,
        "neutral_prompts": neg,
        "reduce": reduce,
        "weight_unit": WEIGHT_UNIT,
        "recommended_weight": 1.0,
        "norm": round(float(diff.norm()), 6),
    }
    return TextOffset(concept, diff, metadata, pooled)


_JSON_KEYS = ("prompts", "neutral_prompts", "shape", "recommended_weight", "norm", "weight_calibration")


def load_text_offset(path: Path | str) -> TextOffset:
    """Read a ``.text.safetensors`` file; SteeringFileError when it is not a valid text offset."""
    tensors, raw = read_steering_file(path)
    if raw.get("diffsteer_kind") != KIND:
        raise SteeringFileError(
            f"{path} holds a '{raw.get('diffsteer_kind')}' steering file, not a text offset"
        )
    tensor = tensors.get("offset")
    if tensor is None:
        raise SteeringFileError(f"{path} has no tensor 'offset'")
    metadata: dict[str, Any] = {k: v for k, v in raw.items() if k not in _JSON_KEYS}
    for key in _JSON_KEYS:
        if key in raw:
            metadata[key] = meta_json(raw, key)
    concept = raw.get("concept") or Path(path).name.split(".")[0]
    pooled = tensors.get("pooled")
    try:
        return TextOffset(concept, tensor.float(), metadata, None if pooled is None else pooled.float())
    except ValueError as exc:
        raise SteeringFileError(f"{path}: {exc}") from None
