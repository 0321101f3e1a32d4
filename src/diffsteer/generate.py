"""Batched, seeded, steerable image generation through diffusers' public seams only.

Steering never patches diffusers: initial noise goes in through ``latents=``, prompt-embedding
offsets through ``prompt_embeds=`` (and SDXL's ``pooled_prompt_embeds=``), h-space vectors through a
forward hook on one U-Net block, and intermediate latents come out through ``callback_on_step_end``.
Image ``k`` always starts from the noise drawn from ``seed`` on a CPU generator, so an audit can
compare the same image with and without a mitigation (paired comparisons), on any device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


@dataclass
class ImageRequest:
    """One image to generate; the optional tensors steer it and default to "no steering"."""

    prompt: str
    seed: int
    negative_prompt: str = ""
    noise_offset: torch.Tensor | None = None  # (C, H, W), added to the unit-variance initial noise
    hspace: torch.Tensor | None = None  # (C, h, w), added to the steered U-Net block's output
    prompt_embeds_offset: torch.Tensor | None = None  # (dim,) or (seq, dim), added to the prompt embeddings
    pooled_embeds_offset: torch.Tensor | None = None  # (dim,), added to SDXL's pooled prompt embedding
    lora: str | None = None  # a LoRA adapter folder (diffsteer finetune) active for this image only


@dataclass
class GeneratedImage:
    """The outcome for one request; ``image`` is None only when the pixels are unusable."""

    request: ImageRequest
    image: Image.Image | None
    drop_reason: str | None = None
    truncated: bool = False
    latents: dict[int, torch.Tensor] = field(default_factory=dict)


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def _downsampled(size: int, module: torch.nn.Module) -> int:
    """Spatial size after one diffusers ``Downsample2D`` (a stride-2 conv, or average pooling)."""
    op = getattr(module, "conv", None)
    if op is None:
        op = getattr(module, "op", None)
    if isinstance(op, torch.nn.Conv2d) and not isinstance(op.padding, str):
        k, s, p = op.kernel_size[0], op.stride[0], op.padding[0]
        extra = 1 if getattr(module, "padding", 1) == 0 else 0  # padding=0: diffusers pads (0, 1, 0, 1)
        return (size + extra + 2 * p - k) // s + 1
    if isinstance(op, torch.nn.AvgPool2d):
        k = op.kernel_size if isinstance(op.kernel_size, int) else op.kernel_size[0]
        s = op.stride if isinstance(op.stride, int) else op.stride[0]
        return (size - k) // s + 1
    return math.ceil(size / 2)


# Where an h-space vector goes under classifier-free guidance. "conditional" is the method of Li et al.
# (CVPR 2024): guidance then multiplies the vector's effect by the scale, which on pictoworld erases the
# profession along with the gender. "both" adds it to the unconditional pass too: the vector moves the
# picture while guidance still pulls towards the prompt (benchmarks/RESULTS.md).
HSPACE_BRANCHES = ("conditional", "both")


def check_hspace_branches(value: str) -> None:
    """One-line error for an unknown --hspace-branches, raised before any model is loaded."""
    if value not in HSPACE_BRANCHES:
        raise ValueError(f"unknown --hspace-branches {value!r}: choose {' or '.join(HSPACE_BRANCHES)}")


# ------------------------------------------------------------------------------------------ seams
# The steering arithmetic, one function per seam. SteeredGenerator and steering.attach (steering a
# user's own pipeline call) both call these, so the two give the same images for the same seeds.


def draw_noise(
    generator: torch.Generator | list[torch.Generator] | None,
    batch: int,
    latent_shape: Sequence[int],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Unit-variance initial noise for ``batch`` images, float32, drawn as diffusers' pipelines draw it.

    A list of generators gives image ``i`` the noise of ``generator[i]`` alone (so with CPU generators
    image ``seed`` starts from the same noise in any batch and on any device); one generator draws the
    whole batch. Drawn where the generator lives (CPU generators: on the CPU).
    """
    first = generator[0] if isinstance(generator, list) and generator else generator
    where = first.device if isinstance(first, torch.Generator) else torch.device(device)
    return randn_tensor((int(batch), *latent_shape), generator=generator, device=where, dtype=torch.float32)


def add_noise_offsets(noise: torch.Tensor, requests: Sequence[ImageRequest]) -> torch.Tensor:
    """``noise`` (batch, C, H, W; float32) plus each request's ``noise_offset``, in float32."""
    if all(r.noise_offset is None for r in requests):
        return noise
    noise = noise.clone()
    for i, r in enumerate(requests):
        if r.noise_offset is not None:
            if tuple(r.noise_offset.shape) != tuple(noise.shape[1:]):
                raise RuntimeError(
                    f"noise_offset has shape {tuple(r.noise_offset.shape)}, but the initial noise of this "
                    f"call has shape {tuple(noise.shape[1:])} (another height or width?)"
                )
            noise[i] += r.noise_offset.detach().to(noise.device, torch.float32)
    return noise


def add_text_offsets(
    prompt_embeds: torch.Tensor, pooled_embeds: torch.Tensor | None, requests: Sequence[ImageRequest]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conditional prompt embeddings (and SDXL's pooled ones) plus each request's offsets."""
    if any(r.prompt_embeds_offset is not None for r in requests):
        offsets = torch.zeros(prompt_embeds.shape, dtype=torch.float32)
        for i, r in enumerate(requests):
            if r.prompt_embeds_offset is not None:
                offsets[i] = (
                    r.prompt_embeds_offset.detach().to("cpu", torch.float32).expand(prompt_embeds.shape[1:])
                )
        prompt_embeds = prompt_embeds + offsets.to(device=prompt_embeds.device, dtype=prompt_embeds.dtype)
    if any(r.pooled_embeds_offset is not None for r in requests):
        if pooled_embeds is None:
            raise ValueError("pooled_embeds_offset needs a pipeline with a pooled embedding (SDXL)")
        extra = torch.zeros(pooled_embeds.shape, dtype=torch.float32)
        for i, r in enumerate(requests):
            if r.pooled_embeds_offset is not None:
                extra[i] = r.pooled_embeds_offset.detach().to("cpu", torch.float32)
        pooled_embeds = pooled_embeds + extra.to(device=pooled_embeds.device, dtype=pooled_embeds.dtype)
    return prompt_embeds, pooled_embeds


def hspace_hook(
    requests: Sequence[ImageRequest],
    *,
    expected_shape: tuple[int, ...],
    block: str,
    guided: bool,
    both: bool = False,
) -> Callable[..., Any] | None:
    """A forward hook adding each image's h-space vector to ``block``'s output; None when none is set.

    ``guided``: the block sees the batch as [unconditional; conditional] (classifier-free guidance);
    the vector goes to the conditional half, or to both halves when ``both``.
    """
    if all(r.hspace is None for r in requests):
        return None
    size = len(requests)
    vectors = torch.zeros((size, *expected_shape), dtype=torch.float32)
    for i, r in enumerate(requests):
        if r.hspace is not None:
            vectors[i] = r.hspace.detach().to("cpu", torch.float32)
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if tuple(hidden.shape[1:]) != tuple(expected_shape):
            raise RuntimeError(
                f"{block} output has shape {tuple(hidden.shape[1:])}, "
                f"but h-space vectors were built for {tuple(expected_shape)}"
            )
        want = 2 * size if guided else size
        if hidden.shape[0] != want:
            raise RuntimeError(f"{block} saw a batch of {hidden.shape[0]}, expected {want}")
        key = (hidden.dtype, hidden.device)
        if key not in cache:
            cache[key] = vectors.to(device=hidden.device, dtype=hidden.dtype)
        vec = cache[key]
        # under guidance the batch is [unconditional; conditional]
        if guided:
            steered = torch.cat([hidden[:size] + vec if both else hidden[:size], hidden[size:] + vec])
        else:
            steered = hidden + vec
        if isinstance(output, tuple):
            return (steered, *output[1:])
        return steered

    return hook


def bottleneck_block(unet: torch.nn.Module) -> str:
    """The U-Net bottleneck: the mid block, or the deepest down block when there is no mid block."""
    if getattr(unet, "mid_block", None) is not None:
        return "mid_block"
    return f"down_blocks.{len(unet.down_blocks) - 1}"


class SteeredGenerator:
    """Generate images in batches with per-image seeds, prompts and steering tensors."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        *,
        steps: int = 20,
        guidance: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
        hspace_branches: str = "conditional",
        adapter_loader: Callable[[DiffusionPipeline, str], str] | None = None,
        adapter_switch: Callable[[DiffusionPipeline, str | None], None] | None = None,
    ) -> None:
        for name in ("unet", "vae", "encode_prompt"):
            if getattr(pipe, name, None) is None:
                raise ValueError(f"{type(pipe).__name__} has no {name}; expected a Stable Diffusion pipeline")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
        check_hspace_branches(hspace_branches)
        self.hspace_branches = hspace_branches
        self.pipe = pipe
        # LoRA adapters (fine-tunes) are loaded by the caller's loader (steering.lora, which checks the
        # adapter against the model) the first time a request names one, then switched per batch.
        self.adapter_loader = adapter_loader
        self.adapter_switch = adapter_switch
        self._adapters: dict[str, str] = {}
        self.steps = int(steps)
        self.guidance = float(guidance)
        self.batch_size = int(batch_size)
        self.scale = int(getattr(pipe, "vae_scale_factor", 8))
        sample_h, sample_w = _hw(pipe.unet.config.sample_size)
        self.height = int(height or sample_h * self.scale)
        self.width = int(width or sample_w * self.scale)
        if self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be multiples of 8, got {self.height}x{self.width}")

    # ----------------------------------------------------------------------------------- shapes
    @property
    def uses_guidance(self) -> bool:
        """Whether the pipeline runs classifier-free guidance (the U-Net sees [uncond; cond])."""
        return self.guidance > 1.0 and self.pipe.unet.config.get("time_cond_proj_dim") is None

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image's latents at this resolution; the shape of ``noise_offset``."""
        return (
            int(self.pipe.unet.config.in_channels),
            self.height // self.scale,
            self.width // self.scale,
        )

    @property
    def steered_block(self) -> str:
        """The U-Net bottleneck: the mid block, or the deepest down block when there is no mid block."""
        return bottleneck_block(self.pipe.unet)

    @property
    def hspace_shape(self) -> tuple[int, int, int]:
        """Shape of the steered block's output for one image.

        Computed from the U-Net's own downsamplers (both the mid block's input and the deepest down
        block's output come after every one of them); the steering hook re-checks it on every call.
        """
        unet = self.pipe.unet
        _, h, w = self.latent_shape
        for block in unet.down_blocks:
            for down in getattr(block, "downsamplers", None) or []:
                h, w = _downsampled(h, down), _downsampled(w, down)
        return int(unet.config.block_out_channels[-1]), h, w

    @property
    def prompt_embeds_shape(self) -> tuple[int, int]:
        """(sequence length, width) of the conditional prompt embeddings the U-Net attends to."""
        tokenizer = self._tokenizers()[0]
        dim = self.pipe.unet.config.cross_attention_dim
        if not isinstance(dim, int):
            dim = int(dim[0])
        return int(tokenizer.model_max_length), int(dim)

    @property
    def pooled_embeds_dim(self) -> int | None:
        """Width of the pooled prompt embedding SDXL feeds the U-Net beside the tokens; None elsewhere."""
        encoder = getattr(self.pipe, "text_encoder_2", None)
        if encoder is None:
            return None
        return int(encoder.config.projection_dim)

    def _tokenizers(self) -> list[Any]:
        found = [getattr(self.pipe, n, None) for n in ("tokenizer", "tokenizer_2")]
        return [t for t in found if t is not None]

    # ------------------------------------------------------------------------------- per image
    def initial_noise(self, seed: int) -> torch.Tensor:
        """The unit-variance starting noise of image ``seed``: identical on every device and mitigation."""
        generator = torch.Generator("cpu").manual_seed(int(seed))
        return torch.randn(self.latent_shape, generator=generator, dtype=torch.float32)

    def is_truncated(self, prompt: str) -> bool:
        """True when the text encoder will not see the whole prompt (tokens beyond its maximum length)."""
        for tokenizer in self._tokenizers():
            ids = tokenizer(prompt, truncation=False, verbose=False)["input_ids"]
            if len(ids) > tokenizer.model_max_length:
                return True
        return False

    def _validate(self, index: int, request: ImageRequest) -> None:
        def check(name: str, tensor: torch.Tensor | None, allowed: list[tuple[int, ...]]) -> None:
            if tensor is None:
                return
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(
                    f"request {index}: {name} must be a torch.Tensor, got {type(tensor).__name__}"
                )
            if tuple(tensor.shape) not in allowed:
                expected = " or ".join(str(s) for s in allowed)
                raise ValueError(
                    f"request {index}: {name} has shape {tuple(tensor.shape)}, expected {expected}"
                )

        seq, dim = self.prompt_embeds_shape
        check("noise_offset", request.noise_offset, [self.latent_shape])
        check("hspace", request.hspace, [self.hspace_shape])
        check("prompt_embeds_offset", request.prompt_embeds_offset, [(dim,), (seq, dim)])
        if request.pooled_embeds_offset is not None and self.pooled_embeds_dim is None:
            raise ValueError(
                f"request {index}: pooled_embeds_offset needs a pipeline with a pooled embedding (SDXL)"
            )
        check("pooled_embeds_offset", request.pooled_embeds_offset, [(self.pooled_embeds_dim or 0,)])

    # ------------------------------------------------------------------------------ generation
    def generate(
        self,
        requests: Sequence[ImageRequest],
        *,
        record_steps: Sequence[int] = (),
        on_step: Callable[[int], None] | None = None,
    ) -> list[GeneratedImage]:
        """Generate one image per request, ``batch_size`` at a time, one pipeline call per batch (split
        where consecutive requests name different LoRA adapters: the adapter is per call).

        ``record_steps`` are denoising step indices (0-based) whose latents, after that step and in the
        scheduler's own scale, are kept (CPU float32); ``on_step`` is called with the step index after
        every denoising step of every batch. Image ``k`` is bit-identical across runs with the same
        settings, batch size and CPU thread count; changing the batch size or thread count moves latents
        by float rounding only (about 1e-5, at most a pixel level or two).
        """
        requests = list(requests)
        record = sorted({int(s) for s in record_steps})
        bad = [s for s in record if not 0 <= s < self.steps]
        if bad:
            raise ValueError(f"record_steps {bad} out of range: steps are 0..{self.steps - 1}")
        for i, request in enumerate(requests):
            self._validate(i, request)
        results: list[GeneratedImage] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            # one pipeline call per adapter: consecutive requests with the same LoRA (or none) go together
            while batch:
                size = next((i for i, r in enumerate(batch) if r.lora != batch[0].lora), len(batch))
                self._activate(batch[0].lora)
                results.extend(self._generate_batch(batch[:size], set(record), on_step))
                batch = batch[size:]
        return results

    def _activate(self, lora: str | None) -> None:
        """Switch the U-Net to ``lora``'s adapter, or to the base model for None."""
        if lora is None and not self._adapters:
            return
        if self.adapter_loader is None or self.adapter_switch is None:
            raise ValueError(f"request names LoRA adapter {lora!r} but this generator has no adapter loader")
        if lora is not None and lora not in self._adapters:
            self._adapters[lora] = self.adapter_loader(self.pipe, lora)
        self.adapter_switch(self.pipe, None if lora is None else self._adapters[lora])

    def _device(self) -> torch.device:
        return getattr(self.pipe, "_execution_device", None) or self.pipe.device

    def encode(self, batch: Sequence[ImageRequest]) -> dict[str, torch.Tensor | None]:
        """The pipeline's conditioning for ``batch``, as this generator feeds it (fine-tuning samples too)."""
        return self._encode(list(batch))

    def _encode(self, batch: list[ImageRequest]) -> dict[str, torch.Tensor | None]:
        """Encode prompts with the pipeline's own encoder, then add per-image offsets (conditional only)."""
        pipe, cfg = self.pipe, self.uses_guidance
        prompts = [r.prompt for r in batch]
        negatives = [r.negative_prompt for r in batch]
        # SDXL uses an all-zero unconditional embedding for an empty negative prompt; apply that rule
        # per image so an image's result never depends on the other negative prompts in its batch.
        zero_empty = bool(pipe.config.get("force_zeros_for_empty_prompt", False))
        all_empty = all(n == "" for n in negatives)
        encoded = pipe.encode_prompt(
            prompt=prompts,
            device=self._device(),
            num_images_per_prompt=1,
            do_classifier_free_guidance=cfg,
            negative_prompt=None if (zero_empty and all_empty) else negatives,
        )
        out: dict[str, torch.Tensor | None] = {
            "prompt_embeds": encoded[0],
            "negative_prompt_embeds": encoded[1],
        }
        if len(encoded) == 4:  # SDXL: pooled embeddings from the second text encoder
            out["pooled_prompt_embeds"] = encoded[2]
            out["negative_pooled_prompt_embeds"] = encoded[3]
            if cfg and zero_empty and not all_empty:
                empty = torch.tensor([n == "" for n in negatives], device=encoded[1].device)
                for key in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):
                    tensor = out[key]
                    assert tensor is not None
                    mask = empty.view(-1, *([1] * (tensor.ndim - 1)))
                    out[key] = torch.where(mask, torch.zeros_like(tensor), tensor)
        if not cfg:
            out["negative_prompt_embeds"] = None
            out.pop("negative_pooled_prompt_embeds", None)

        embeds = out["prompt_embeds"]
        assert embeds is not None
        if tuple(embeds.shape[1:]) != self.prompt_embeds_shape:
            raise RuntimeError(
                f"prompt embeddings have shape {tuple(embeds.shape[1:])}, expected {self.prompt_embeds_shape}"
            )
        out["prompt_embeds"], pooled = add_text_offsets(embeds, out.get("pooled_prompt_embeds"), batch)
        if pooled is not None:
            out["pooled_prompt_embeds"] = pooled
        return out

    def _hspace_hook(self, batch: list[ImageRequest]) -> Callable[..., Any] | None:
        """A forward hook adding each image's h-space vector to its conditional pass (or to both)."""
        return hspace_hook(
            batch,
            expected_shape=self.hspace_shape,
            block=self.steered_block,
            guided=self.uses_guidance,
            both=self.hspace_branches == "both",
        )

    def _generate_batch(
        self, batch: list[ImageRequest], record: set[int], on_step: Callable[[int], None] | None
    ) -> list[GeneratedImage]:
        unet = self.pipe.unet
        device = self._device()
        # One CPU generator per image: it draws the initial noise, then serves any stochastic sampler
        # steps, exactly as diffusers does with a list of generators, so an image's randomness never
        # depends on which batch it lands in.
        generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in batch]
        noise = add_noise_offsets(draw_noise(generators, len(batch), self.latent_shape), batch)
        latents = noise.to(device=device, dtype=unet.dtype)

        recorded: list[dict[int, torch.Tensor]] = [{} for _ in batch]

        def callback(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            if step in record:
                current = tensors["latents"].detach().to("cpu", torch.float32)
                for i in range(len(batch)):
                    recorded[i][step] = current[i].clone()
            if on_step is not None:
                on_step(step)
            return tensors

        with torch.inference_mode():
            images = self._run(batch, latents, generators, callback)
        # clone outside inference mode so recorded latents can feed autograd (e.g. training a probe)
        recorded = [{step: t.clone() for step, t in steps.items()} for steps in recorded]

        results = []
        for i, r in enumerate(batch):
            pixels = np.asarray(images[i])
            image, reason = None, None
            if not np.isfinite(pixels).all():
                reason = "non-finite pixels"
            else:
                if float(pixels.max()) < 1.0 / 255.0:
                    reason = "all-black image"
                array = (np.clip(pixels, 0.0, 1.0) * 255.0).round().astype(np.uint8)
                image = Image.fromarray(array).convert("RGB")
            results.append(
                GeneratedImage(
                    request=r,
                    image=image,
                    drop_reason=reason,
                    truncated=self.is_truncated(r.prompt),
                    latents=recorded[i],
                )
            )
        return results

    def _run(
        self,
        batch: list[ImageRequest],
        latents: torch.Tensor,
        generators: list[torch.Generator],
        callback: Callable[..., dict[str, Any]],
    ) -> np.ndarray:
        """One pipeline call for the batch, with the h-space hook attached only for its duration."""
        unet = self.pipe.unet
        kwargs: dict[str, Any] = dict(
            self._encode(batch),
            latents=latents,
            generator=generators,
            num_inference_steps=self.steps,
            guidance_scale=self.guidance,
            height=self.height,
            width=self.width,
            output_type="np",
            callback_on_step_end=callback,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        hook = self._hspace_hook(batch)
        handle = unet.get_submodule(self.steered_block).register_forward_hook(hook) if hook else None
        try:
            return self.pipe(**kwargs).images
        finally:
            if handle is not None:
                handle.remove()
