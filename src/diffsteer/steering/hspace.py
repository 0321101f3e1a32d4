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

Training images go through a :class:`~diffsteer.runs.store.RunStore`, so an interrupted learn resumes
without generating them again. Files are ``<concept>.hspace.safetensors`` (see steering.files).
"""

from __future__ import annotations

import math
import time
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
    "learn_hspace",
    "load_hspace",
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
GENERATE_CHUNK = 32  # images generated and stored per chunk: the most a kill can lose
_SEED_STRIDE = 1_000_000  # training images use seeds far from the 0..n seeds audits use

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


def learn_hspace(
    pipe: DiffusionPipeline,
    *,
    concept: str,
    concept_prompt: str,
    neutral_prompt: str,
    negative_prompt: str = "",
    images: int = DEFAULT_IMAGES,
    steps: int = DEFAULT_STEPS,
    lr: float = 0.1,
    batch_size: int = 8,
    seed: int = 0,
    guidance: float = 7.5,
    inference_steps: int = 20,
    work_dir: Path | str,
    base_model: str,
    axis: str | None = None,
    class_name: str | None = None,
    generate_batch_size: int = 16,
    progress: Progress | None = None,
) -> HSpaceVector:
    """Learn the h-space vector of ``concept`` (see the module docstring for the method).

    ``concept_prompt`` (with ``negative_prompt``) makes the training images, ``neutral_prompt``
    conditions the U-Net while the vector is optimised. Images are stored in ``work_dir`` (a run
    store) and reused by any later learn with the same model and image recipe. Deterministic given
    ``seed`` (same device and thread count).
    """
    from diffsteer.models import model_fingerprint

    check_recipe(concept, concept_prompt, neutral_prompt, images, steps, lr, batch_size, inference_steps)
    report = progress or (lambda _stage, _done, _total: None)
    started = time.time()
    generator = SteeredGenerator(
        pipe, steps=inference_steps, guidance=guidance, batch_size=generate_batch_size
    )
    fingerprint = model_fingerprint(pipe)
    recipe = {
        "concept_prompt": concept_prompt,
        "neutral_prompt": neutral_prompt,
        "negative_prompt": negative_prompt,
        "images": int(images),
        "steps": int(steps),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "guidance": float(guidance),
        "inference_steps": int(inference_steps),
        "image_seeds": f"{_SEED_STRIDE * (seed + 1)}..{_SEED_STRIDE * (seed + 1) + images - 1}",
        "scheduler": "DDPM forward process from the pipeline's scheduler config, t uniform",
    }

    pictures = _training_images(generator, recipe, fingerprint, base_model, Path(work_dir), report)
    generated_at = time.time()
    x0 = _encode_images(pipe, pictures)
    vector, curve, eval_loss = _optimise(pipe, generator, x0, recipe, report)
    finished = time.time()

    metadata: dict[str, Any] = {
        "base_model": base_model,
        "fingerprint": fingerprint,
        "block": generator.steered_block,
        "shape": list(generator.hspace_shape),
        "image_size": [generator.height, generator.width],
        "prediction_type": _prediction_type(pipe),
        "recipe": recipe,
        "loss_curve": curve,
        "eval_loss": eval_loss,
        "axis": axis,
        "class_name": class_name,
        "seconds": round(finished - started, 2),
        "seconds_images": round(generated_at - started, 2),
        "seconds_optimise": round(finished - generated_at, 2),
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}  # as a saved file reads back
    return HSpaceVector(concept=concept, vector=vector, metadata=metadata)


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


def _prediction_type(pipe: DiffusionPipeline) -> str:
    return str(pipe.scheduler.config.get("prediction_type", "epsilon"))


def _training_images(
    generator: SteeredGenerator,
    recipe: dict[str, Any],
    fingerprint: str,
    base_model: str,
    work_dir: Path,
    report: Progress,
) -> list[Any]:
    """The N training pictures, generated into (or read back from) the run store in ``work_dir``."""
    from diffsteer.models import weights_fingerprint
    from diffsteer.runs.store import ImageRecord, RunStore, job_key

    dtype = str(generator.pipe.unet.dtype).replace("torch.", "")
    weights = weights_fingerprint(generator.pipe)  # images of other weights in the store are not reused
    config = {
        "purpose": "hspace training images",
        "model": base_model,
        "fingerprint": fingerprint,
        "size": [generator.height, generator.width],
    }
    total = recipe["images"]
    first_seed = _SEED_STRIDE * (recipe["seed"] + 1)
    jobs: list[tuple[ImageRecord, ImageRequest]] = []
    for k in range(total):
        request = ImageRequest(recipe["concept_prompt"], first_seed + k, recipe["negative_prompt"])
        key = job_key(
            model=fingerprint,
            weights=weights,
            prompt=request.prompt,
            negative=request.negative_prompt,
            seed=request.seed,
            steps=recipe["inference_steps"],
            guidance=recipe["guidance"],
            size=[generator.height, generator.width],
            dtype=dtype,
        )
        record = ImageRecord(
            key=key,
            mitigation="none",
            prompt_id="hspace-concept",
            prompt=request.prompt,
            final_prompt=request.prompt,
            seed=request.seed,
            image_index=k,
            steering={"negative_prompt": request.negative_prompt} if request.negative_prompt else {},
            model=base_model,
            status="ok",
        )
        jobs.append((record, request))

    # resume=True: rows of other recipes stay; only rows whose key matches a job of this one are read
    with RunStore.open(work_dir, config, resume=True) as store:
        done = store.done_keys()
        todo = [job for job in jobs if job[0].key not in done]
        finished = total - len(todo)
        report("images", finished, total)
        for start in range(0, len(todo), GENERATE_CHUNK):
            chunk = todo[start : start + GENERATE_CHUNK]
            results = generator.generate([request for _, request in chunk])
            items = []
            for (record, _), result in zip(chunk, results, strict=True):
                if result.drop_reason is not None:
                    record.status, record.drop_reason = "dropped", result.drop_reason
                items.append((record, result.image))
            store.add_images(items)
            finished += len(chunk)
            report("images", finished, total)
        wanted = {record.key for record, _ in jobs}
        rows = [r for r in store.images(status="ok") if r.key in wanted]
        rows.sort(key=lambda r: r.image_index)
        pictures = [store.load_image(r) for r in rows]
    if not pictures:
        raise RuntimeError(f"every one of the {total} training images was unusable (non-finite or black)")
    return pictures


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
    prediction = _prediction_type(pipe)
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
