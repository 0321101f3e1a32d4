"""Self-discovered h-space concept vectors: learn one, save it, load it, check it fits a model.

The method of Li et al., "Self-Discovering Interpretable Diffusion Latent Directions for Responsible
Text-to-Image Generation" (CVPR 2024): one vector with the shape of the U-Net bottleneck output
(the mid block, or the deepest down block when a U-Net has none) is added to that output at every
denoising step. It is learned self-supervised:

1. generate N images from a prompt that states the concept ("a photo of a woman"); an anti-concept
   comes from images made with the concept in the *negative* prompt;
2. encode them with the VAE to latents x0;
3. with every model weight frozen, optimise only the vector with the ordinary denoising loss while
   each image is conditioned on a prompt *without* the concept ("a photo of a person"): the only way
   to denoise a woman's picture from "a person" is for the vector to supply "woman".

This module holds the method (steps 2 and 3: :func:`fit_hspace_vector`) and the file format;
:func:`diffsteer.experiments.learn.learn_hspace` makes the training images through the run store and
the shared runner, so an interrupted learn resumes without generating them again. Files are
``<concept>.hspace.safetensors`` (see steering.files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiffusionPipeline

from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.steering.files import (
    SUFFIX,
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

__all__ = [
    "DEFAULT_IMAGES",
    "DEFAULT_STEPS",
    "HSpaceVector",
    "check_recipe",
    "fit_hspace_vector",
    "load_hspace",
    "prediction_type",
]

KIND = "hspace"
TENSOR_KEY = "vector"
# Paper: N=1000 images, 2500 steps, batch 8, lr 0.1 (SD 1.x). On pictoworld (32x32 pictures, a
# 96x4x4 bottleneck) the loss on a fixed evaluation draw has flattened by 300 steps (600 steps lower
# it by under 2% while Adam keeps growing the vector), and 256 images with 300 steps learn one
# concept in about 2-3 minutes on a 2-core CPU. For a real Stable Diffusion model pass the paper's.
DEFAULT_IMAGES = 256
DEFAULT_STEPS = 300
LOSS_WINDOW = 50  # the loss curve holds the mean loss of every LOSS_WINDOW steps
EVAL_SAMPLES = 64  # fixed (image, t, noise) draws on which the learned vector is compared with none

# metadata values kept as plain strings; every other value is JSON
_STRING_KEYS = ("concept", "base_model", "fingerprint", "block", "axis", "class_name", "weight_rule")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class HSpaceVector:
    """A learned concept vector and where it came from.

    ``vector`` is float32 with the steered block's output shape for one image, (C, h, w).
    ``metadata`` holds base_model, fingerprint, block, shape, recipe, loss_curve, eval_loss, seconds
    and, for a class of an attribute axis (fair generation), axis and class_name; a calibrated
    vector also holds its default strength (``recommended_weight``) and its calibration record.
    """

    kind: ClassVar[str] = KIND
    strength_unit: ClassVar[str] = "vector"  # multiples of the learned vector
    # strength 1 is the vector as learned; the fair strength on pictoworld lies above it
    calibration_strengths: ClassVar[tuple[float, ...]] = (0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2, 2.5, 3)

    concept: str
    vector: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> HSpaceVector:
        return load_hspace(path)

    @property
    def block(self) -> str:
        return str(self.metadata.get("block", ""))

    @property
    def axis(self) -> str | None:
        return self.metadata.get("axis")

    @property
    def class_name(self) -> str | None:
        return self.metadata.get("class_name")

    @property
    def default_strength(self) -> float:
        """The calibrated strength stored in the file; 1 (the vector as learned) for files without one."""
        return stored_strength(self.metadata)

    def scaled(self, strength: float = 1.0) -> torch.Tensor:
        """The vector times ``strength``, ready for ``ImageRequest.hspace``."""
        if not math.isfinite(strength):
            raise ValueError(f"strength must be a finite number, got {strength}")
        return self.vector * float(strength)

    def apply(self, request: ImageRequest, strength: float | None = None) -> ImageRequest:
        """``request`` with the vector added to its bottleneck offset (default strength when None)."""
        s = self.default_strength if strength is None else strength
        return replace(request, hspace=add_offset(request.hspace, self.scaled(s)))

    def digest(self) -> str:
        return tensor_digest(self.vector)

    def set_default_strength(self, strength: float, *, rule: str, record: Mapping[str, Any]) -> None:
        record_calibration(self.metadata, strength, rule, record)

    def save(self, dir_or_path: Path | str) -> Path:
        """Write ``<concept>.hspace.safetensors`` into a folder, or to a path ending in .safetensors."""
        target = Path(dir_or_path)
        if target.name.endswith(SUFFIX):
            path = target
        else:
            path = target / steering_filename(self.concept, KIND)
        metadata = {k: v for k, v in self.metadata.items() if v is not None}
        metadata.update(diffsteer_kind=KIND, concept=self.concept)
        return save_steering_file(path, {TENSOR_KEY: self.vector.to(torch.float32)}, metadata)

    def check_compatible(self, generator: SteeredGenerator, fingerprint: str | None = None) -> None:
        """Raise SteeringMismatchError (one line) unless this vector was learned for this U-Net.

        ``fingerprint`` defaults to models.model_fingerprint(generator.pipe).
        """
        from diffsteer.models import model_fingerprint

        source = f"h-space vector '{self.concept}'"
        fingerprint = fingerprint or model_fingerprint(generator.pipe)
        check_model({k: str(v) for k, v in self.metadata.items()}, fingerprint=fingerprint, source=source)
        if self.block != generator.steered_block:
            raise SteeringMismatchError(
                f"{source} steers {self.block or 'an unknown block'}, but this model's bottleneck is "
                f"{generator.steered_block}"
            )
        check_shape(self.vector, generator.hspace_shape, source=source, what="vector")


def load_hspace(path: Path | str) -> HSpaceVector:
    """Read an h-space vector file; SteeringFileError (one line) when it is anything else."""
    tensors, raw = read_steering_file(path)
    if raw.get("diffsteer_kind") != KIND:
        raise SteeringFileError(
            f"{path} is a {raw.get('diffsteer_kind')} steering file, not an h-space vector"
        )
    vector = tensors.get(TENSOR_KEY)
    if vector is None or vector.ndim != 3 or not vector.is_floating_point():
        raise SteeringFileError(f"{path} has no (C, h, w) float tensor '{TENSOR_KEY}'")
    concept = raw.get("concept") or Path(path).name.split(".")[0]
    metadata: dict[str, Any] = {}
    for key in raw:
        if key in ("diffsteer_kind", "diffsteer_format", "concept"):
            continue
        metadata[key] = raw[key] if key in _STRING_KEYS else meta_json(raw, key)
    return HSpaceVector(concept=concept, vector=vector.to(torch.float32), metadata=metadata)


# ---------------------------------------------------------------------------------------- learning


def check_recipe(
    concept: str,
    concept_prompt: str,
    neutral_prompt: str,
    images: int,
    steps: int,
    lr: float,
    batch_size: int,
    inference_steps: int,
) -> None:
    """ValueError (one line) for a recipe that cannot be learned; cheap, so callers check first."""
    steering_filename(concept, KIND)  # validates the name
    if not concept_prompt.strip():
        raise ValueError("the concept prompt is empty")
    if not neutral_prompt.strip():
        raise ValueError("the neutral prompt is empty")
    for name, value in (
        ("images", images),
        ("steps", steps),
        ("batch_size", batch_size),
        ("inference_steps", inference_steps),
    ):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr}")


def prediction_type(pipe: DiffusionPipeline) -> str:
    return str(pipe.scheduler.config.get("prediction_type", "epsilon"))


def fit_hspace_vector(
    generator: SteeredGenerator,
    pictures: list[Any],
    recipe: dict[str, Any],
    progress: Progress | None = None,
) -> tuple[torch.Tensor, list[float], dict[str, float]]:
    """Steps 2 and 3 of the method on the training pictures: (vector, loss curve, evaluation losses).

    ``recipe`` holds ``neutral_prompt``, ``steps``, ``lr``, ``batch_size`` and ``seed``
    (see :func:`diffsteer.experiments.learn.learn_hspace`).
    """
    report = progress or (lambda _stage, _done, _total: None)
    x0 = _encode_images(generator.pipe, pictures)
    return _optimise(generator.pipe, generator, x0, recipe, report)


@torch.no_grad()
def _encode_images(pipe: DiffusionPipeline, pictures: list[Any], chunk: int = 64) -> torch.Tensor:
    """VAE latents of the pictures (posterior mean, times the VAE's scaling factor), float32 on CPU."""
    vae = pipe.vae
    device = _device(pipe)
    # SDXL's VAE overflows in float16; the pipeline itself upcasts it for decoding, so do the same
    upcast = vae.dtype == torch.float16 and bool(vae.config.get("force_upcast", False))
    dtype = torch.float32 if upcast else vae.dtype
    original = vae.dtype
    if upcast:
        vae.to(torch.float32)
    try:
        out = []
        for start in range(0, len(pictures), chunk):
            arrays = np.stack(
                [np.asarray(p.convert("RGB"), dtype=np.float32) for p in pictures[start : start + chunk]]
            )
            x = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0
            latents = vae.encode(x.to(device=device, dtype=dtype)).latent_dist.mean
            shift = vae.config.get("shift_factor", None)
            if shift is not None:
                latents = latents - shift
            out.append((latents * vae.config.scaling_factor).float().cpu())
    finally:
        if upcast:
            vae.to(original)
    x0 = torch.cat(out)
    if not torch.isfinite(x0).all():
        raise RuntimeError("the VAE produced non-finite latents for the training images")
    return x0


@dataclass
class _Conditioning:
    """The neutral prompt's U-Net conditioning for one image (expanded per batch)."""

    embeds: torch.Tensor
    added: dict[str, torch.Tensor] | None

    def batch(self, n: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"encoder_hidden_states": self.embeds.expand(n, *self.embeds.shape[1:])}
        if self.added is not None:
            kwargs["added_cond_kwargs"] = {k: v.expand(n, *v.shape[1:]) for k, v in self.added.items()}
        return kwargs


@torch.no_grad()
def _neutral_conditioning(pipe: DiffusionPipeline, generator: SteeredGenerator, prompt: str) -> _Conditioning:
    """Encode the neutral prompt without guidance; SDXL also needs pooled text embeds and time ids."""
    device = _device(pipe)
    encoded = pipe.encode_prompt(
        prompt=[prompt], device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    embeds = encoded[0].to(pipe.unet.dtype)
    added = None
    if pipe.unet.config.get("addition_embed_type") == "text_time":
        pooled = encoded[2]
        # SDXL micro-conditioning: (original h, original w, crop top, crop left, target h, target w)
        h, w = generator.height, generator.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=pipe.unet.dtype)
        added = {"text_embeds": pooled.to(pipe.unet.dtype), "time_ids": time_ids}
    return _Conditioning(embeds=embeds, added=added)


def _training_scheduler(pipe: DiffusionPipeline) -> DDPMScheduler:
    """The DDPM forward process the U-Net was trained with, from the pipeline's own beta schedule.

    Sampling schedulers (Euler, DPM-Solver) keep the betas but not always DDPM's ``add_noise`` scale
    (Euler's is in sigma units), so the training process is rebuilt from the config.
    """
    config = dict(pipe.scheduler.config)
    return DDPMScheduler.from_config(config)


def _optimise(
    pipe: DiffusionPipeline,
    generator: SteeredGenerator,
    x0: torch.Tensor,
    recipe: dict[str, Any],
    report: Progress,
) -> tuple[torch.Tensor, list[float], dict[str, float]]:
    """Adam on the vector alone, everything else frozen; returns (vector, loss curve, eval loss)."""
    unet = pipe.unet
    device = _device(pipe)
    dtype = unet.dtype
    scheduler = _training_scheduler(pipe)
    prediction = prediction_type(pipe)
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction type {prediction!r} is not supported (epsilon or v_prediction)")
    n_train = int(scheduler.config.num_train_timesteps)
    cond = _neutral_conditioning(pipe, generator, recipe["neutral_prompt"])
    block = unet.get_submodule(generator.steered_block)
    shape = generator.hspace_shape
    vector = torch.zeros(shape, dtype=torch.float32, device=device, requires_grad=True)

    def hook(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if tuple(hidden.shape[1:]) != shape:
            raise RuntimeError(
                f"{generator.steered_block} output has shape {tuple(hidden.shape[1:])}, not {shape}"
            )
        steered = hidden + vector.to(hidden.dtype)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    rng = torch.Generator("cpu").manual_seed(int(recipe["seed"]))

    def draw(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(x0), (n,), generator=gen)
        t = torch.randint(0, n_train, (n,), generator=gen)
        noise = torch.randn((n, *x0.shape[1:]), generator=gen)
        return idx, t, noise

    def loss_of(idx: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        clean = x0[idx]
        noisy = scheduler.add_noise(clean, noise, t)
        if prediction == "v_prediction":
            target = scheduler.get_velocity(clean, noise, t)
        else:
            target = noise
        pred = unet(noisy.to(device, dtype), t.to(device), **cond.batch(len(idx))).sample
        return F.mse_loss(pred.float(), target.to(device))

    frozen = [(p, p.requires_grad) for part in _modules(pipe) for p in part.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    handle = block.register_forward_hook(hook)
    try:
        eval_draw = draw(
            min(EVAL_SAMPLES, 8 * len(x0)), torch.Generator("cpu").manual_seed(int(recipe["seed"]) + 1)
        )
        zero_loss = _eval(loss_of, eval_draw, recipe["batch_size"])
        optimiser = torch.optim.Adam([vector], lr=recipe["lr"])
        losses: list[float] = []
        for step in range(recipe["steps"]):
            loss = loss_of(*draw(recipe["batch_size"], rng))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            report("learn", step + 1, recipe["steps"])
        learned_loss = _eval(loss_of, eval_draw, recipe["batch_size"])
    finally:
        handle.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
    curve = [
        round(float(np.mean(losses[i : i + LOSS_WINDOW])), 6) for i in range(0, len(losses), LOSS_WINDOW)
    ]
    eval_loss = {"without_vector": round(zero_loss, 6), "with_vector": round(learned_loss, 6)}
    return vector.detach().cpu().to(torch.float32), curve, eval_loss


def _device(pipe: DiffusionPipeline) -> torch.device:
    return getattr(pipe, "_execution_device", None) or pipe.device


def _modules(pipe: DiffusionPipeline) -> list[torch.nn.Module]:
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


@torch.no_grad()
def _eval(loss_of: Callable[..., torch.Tensor], sample: tuple[torch.Tensor, ...], batch_size: int) -> float:
    """Mean loss over a fixed draw of (image, t, noise): the same draw before and after learning."""
    idx, t, noise = sample
    total = 0.0
    for s in range(0, len(idx), batch_size):
        part = slice(s, s + batch_size)
        total += float(loss_of(idx[part], t[part], noise[part])) * len(idx[part])
    return total / len(idx)
