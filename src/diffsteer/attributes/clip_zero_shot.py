"""Zero-shot CLIP labelling of generated images along attribute axes, following ENTIGEN (EMNLP 2022).

Every image first passes ENTIGEN's person filter ("a photo of a person" must beat "a photo of an
object"); images that fail are kept in the output with a drop reason, so a report can say how many
images were not counted and why. Preprocessing is done here with PIL and numpy so the classifier needs
neither torchvision nor a transformers image processor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoTokenizer, CLIPModel
from transformers.utils import cached_file

from diffsteer.attributes.axes import OBJECT_PROMPT, PERSON_PROMPT, Axis

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_CLASSIFIER = "openai/clip-vit-base-patch32"
"""ENTIGEN's classifier, CLIP ViT-B/32; the default for real audits."""


class ClassifierNotFoundError(RuntimeError):
    """Raised when a CLIP classifier cannot be loaded from a folder or hub id; the message is one line."""


@dataclass
class AxisLabel:
    """The winning label on one axis (a class or ``"uncertain"``) and the softmax it came from."""

    label: str
    probs: dict[str, float]


@dataclass
class ImageLabels:
    """Labels for one image; ``drop_reason`` is set (and ``axes`` empty) when the image is not counted."""

    is_person: bool
    person_prob: float
    axes: dict[str, AxisLabel] = field(default_factory=dict)
    drop_reason: str | None = None

    @property
    def kept(self) -> bool:
        """Whether the image counts towards the audit."""
        return self.drop_reason is None


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pooled(output: Any) -> torch.Tensor:
    # transformers 4.x returns the projected features; 5.x returns an output object holding them.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _looks_like_path(ref: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local path."""
    return (
        os.path.isabs(ref)
        or ref.startswith((".", "~"))
        or ref.count("/") > 1
        or "\\" in ref
        or os.path.exists(ref)
    )


def _preprocessing_from_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Mean, std, resize and crop sizes from a CLIP ``preprocessor_config.json``."""
    out: dict[str, Any] = {}
    if "image_mean" in cfg:
        out["image_mean"] = tuple(float(x) for x in cfg["image_mean"])
    if "image_std" in cfg:
        out["image_std"] = tuple(float(x) for x in cfg["image_std"])
    size = cfg.get("size")
    if isinstance(size, int):
        out["resize_to"] = size
    elif isinstance(size, dict):
        edge = size.get("shortest_edge")
        if edge is None and "height" in size and "width" in size:
            edge = min(size["height"], size["width"])
        if edge is not None:
            out["resize_to"] = int(edge)
    crop = cfg.get("crop_size")
    if isinstance(crop, int):
        out["crop_size"] = (crop, crop)
    elif isinstance(crop, dict) and "height" in crop and "width" in crop:
        out["crop_size"] = (int(crop["height"]), int(crop["width"]))
    return out


class ClipZeroShotClassifier:
    """Labels images with CLIP by softmax over each axis's prompts, after ENTIGEN's person filter.

    The model is moved to ``device`` and put in eval mode. Text embeddings are cached per prompt, so
    repeated calls only pay for the images.
    """

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: Any,
        *,
        classifier_id: str,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        resize_to: int | None = None,
        crop_size: int | tuple[int, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(image_mean) != 3 or len(image_std) != 3 or min(image_std) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values (std > 0): {image_mean}, {image_std}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.classifier_id = classifier_id
        self.batch_size = batch_size
        self.image_mean = tuple(float(x) for x in image_mean)
        self.image_std = tuple(float(x) for x in image_std)
        image_size = int(model.config.vision_config.image_size)
        self.resize_to = int(resize_to) if resize_to is not None else image_size
        crop = crop_size if crop_size is not None else image_size
        self.crop_size: tuple[int, int] = (int(crop), int(crop)) if isinstance(crop, int) else tuple(crop)
        if max(self.crop_size) > self.resize_to:
            raise ValueError(f"crop size {self.crop_size} is larger than the resize size {self.resize_to}")
        self._dtype = next(model.parameters()).dtype
        self._max_text_len = min(
            int(getattr(tokenizer, "model_max_length", 77) or 77),
            int(model.config.text_config.max_position_embeddings),
        )
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_pretrained(
        cls, ref: str = DEFAULT_CLASSIFIER, *, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> ClipZeroShotClassifier:
        """Load a CLIP model and tokenizer from a local folder or a hub id (safetensors weights only)."""
        path = Path(ref).expanduser()
        local = path.is_dir()
        if not local and _looks_like_path(ref):
            raise ClassifierNotFoundError(f"CLIP classifier not found: tried local folder {str(path)!r}")
        source = str(path) if local else ref
        tried = f"local folder {source!r}" if local else f"hub id {ref!r} (no local folder by that name)"
        try:
            model, info = CLIPModel.from_pretrained(source, use_safetensors=True, output_loading_info=True)
        except Exception as exc:  # transformers raises many types; the user needs one clear line
            raise ClassifierNotFoundError(
                f"could not load CLIP classifier: tried {tried}: {_one_line(exc)}"
            ) from exc
        missing = info.get("missing_keys") or []
        if missing:
            # A non-CLIP checkpoint would load with random weights and give meaningless labels.
            raise ClassifierNotFoundError(
                f"could not load CLIP classifier from {tried}: {len(missing)} weights missing "
                f"(e.g. {sorted(missing)[0]}); is it a full CLIPModel checkpoint?"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise ClassifierNotFoundError(
                f"could not load the tokenizer of CLIP classifier: tried {tried}: {_one_line(exc)}"
            ) from exc
        # transformers may build an empty tokenizer when a folder has no tokenizer files; every prompt
        # would then encode to the same unknown tokens and all labels would be noise.
        special = set(getattr(tokenizer, "all_special_ids", []))
        if all(i in special for i in tokenizer(PERSON_PROMPT)["input_ids"]):
            raise ClassifierNotFoundError(
                f"could not load the tokenizer of CLIP classifier: tried {tried}: it has no vocabulary "
                f"(are the tokenizer files missing?)"
            )
        settings = _preprocessing_from_config(_read_preprocessor_config(source, local))
        return cls(model, tokenizer, classifier_id=ref, device=device, batch_size=batch_size, **settings)

    # ----------------------------------------------------------------------------------------------
    # Preprocessing and features

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """CLIP's preprocessing: RGB, bicubic resize of the short side, centre crop, [0, 1], normalise."""
        crop_h, crop_w = self.crop_size
        mean = torch.tensor(self.image_mean).view(3, 1, 1)
        std = torch.tensor(self.image_std).view(3, 1, 1)
        tensors = []
        for image in images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"expected PIL images, got {type(image).__name__}")
            rgb = image.convert("RGB")
            width, height = rgb.size
            short, long = min(width, height), max(width, height)
            long_out = max(1, int(self.resize_to * long / short))
            size = (self.resize_to, long_out) if width <= height else (long_out, self.resize_to)
            rgb = rgb.resize(size, Image.Resampling.BICUBIC)
            top, left = (size[1] - crop_h) // 2, (size[0] - crop_w) // 2
            rgb = rgb.crop((left, top, left + crop_w, top + crop_h))
            array = np.asarray(rgb, dtype=np.float32) / 255.0
            tensors.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
        if not tensors:
            return torch.empty(0, 3, crop_h, crop_w)
        return torch.stack(tensors)

    def image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised CLIP image embeddings, shape ``(len(images), dim)``, float32 on the CPU."""
        images = list(images)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                pixels = self.preprocess(images[start : start + self.batch_size])
                pixels = pixels.to(device=self.device, dtype=self._dtype)
                feats = _pooled(self.model.get_image_features(pixel_values=pixels))
                chunks.append(F.normalize(feats.float(), dim=-1).cpu())
        if not chunks:
            return torch.empty(0, int(self.model.config.projection_dim))
        return torch.cat(chunks)

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised CLIP text embeddings, one row per prompt, computed once per distinct prompt."""
        prompts = list(prompts)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                chunk = missing[start : start + self.batch_size]
                tokens = self.tokenizer(
                    chunk, padding=True, truncation=True, max_length=self._max_text_len, return_tensors="pt"
                )
                feats = _pooled(
                    self.model.get_text_features(
                        input_ids=tokens["input_ids"].to(self.device),
                        attention_mask=tokens["attention_mask"].to(self.device),
                    )
                )
                for prompt, feat in zip(chunk, F.normalize(feats.float(), dim=-1).cpu(), strict=True):
                    self._text_cache[prompt] = feat
        if not prompts:
            return torch.empty(0, int(self.model.config.projection_dim))
        return torch.stack([self._text_cache[p] for p in prompts])

    def _logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().float().exp().item())

    def clip_score(self, images: Sequence[Image.Image], prompts: str | Sequence[str]) -> list[float]:
        """CLIP score per (image, prompt) pair: 100 * cosine similarity (not clipped at 0).

        One prompt applies to every image; otherwise give one prompt per image.
        """
        images = list(images)
        prompt_list = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(images):
            raise ValueError(f"got {len(images)} images but {len(prompt_list)} prompts; need one per image")
        if not images:
            return []
        cosine = (self.image_features(images) * self.text_features(prompt_list)).sum(dim=-1)
        return [100.0 * float(c) for c in cosine]

    # ----------------------------------------------------------------------------------------------
    # Classification

    def classify(
        self, images: Sequence[Image.Image], axes: Sequence[Axis], *, person_filter: bool = True
    ) -> list[ImageLabels]:
        """Label each image on each axis (argmax of the softmax over the axis's prompts).

        With ``person_filter`` an image whose "person" logit does not beat the "object" logit is returned
        with ``drop_reason`` set and no axis labels. Without it every image is labelled, and
        ``is_person`` / ``person_prob`` are still reported for information.
        """
        images, axes = list(images), list(axes)
        names = [axis.name for axis in axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis names must be distinct, got {names}")
        if not images:
            return []
        prompts = [PERSON_PROMPT, OBJECT_PROMPT] + [p for axis in axes for p in axis.all_prompts]
        logits = self._logit_scale() * self.image_features(images) @ self.text_features(prompts).T

        results: list[ImageLabels] = []
        person_probs = logits[:, :2].softmax(dim=-1)[:, 0]
        offsets = []
        start = 2
        for axis in axes:
            offsets.append((axis, start, start + len(axis.all_prompts)))
            start += len(axis.all_prompts)
        for row, p_person in zip(logits, person_probs, strict=True):
            is_person = bool(row[0] > row[1])
            prob = float(p_person)
            if person_filter and not is_person:
                reason = f"person filter: scored as an object (p_person={prob:.2f})"
                results.append(ImageLabels(is_person=False, person_prob=prob, axes={}, drop_reason=reason))
                continue
            labels: dict[str, AxisLabel] = {}
            for axis, lo, hi in offsets:
                probs = row[lo:hi].softmax(dim=-1)
                probs_by_label = {label: float(p) for label, p in zip(axis.labels, probs, strict=True)}
                labels[axis.name] = AxisLabel(label=axis.labels[int(probs.argmax())], probs=probs_by_label)
            results.append(ImageLabels(is_person=is_person, person_prob=prob, axes=labels, drop_reason=None))
        return results


def _read_preprocessor_config(source: str, local: bool) -> dict[str, Any]:
    """The checkpoint's ``preprocessor_config.json`` as a dict, or ``{}`` when it has none."""
    try:
        if local:
            file = Path(source) / "preprocessor_config.json"
            if not file.is_file():
                return {}
            return json.loads(file.read_text(encoding="utf-8"))
        name = "preprocessor_config.json"
        resolved = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        return json.loads(Path(resolved).read_text(encoding="utf-8")) if resolved else {}
    except (OSError, ValueError) as exc:
        raise ClassifierNotFoundError(
            f"could not read preprocessor_config.json of CLIP classifier {source!r}: {_one_line(exc)}"
        ) from exc


__all__ = [
    "DEFAULT_CLASSIFIER",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "AxisLabel",
    "ClassifierNotFoundError",
    "ClipZeroShotClassifier",
    "ImageLabels",
]
