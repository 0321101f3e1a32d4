"""How to build a ready-to-run steered generator: model, precision, attention, compilation, batch size.

A :class:`GeneratorSpec` is small and picklable, so the same recipe builds the generator in this
process (local executor) and inside each Ray worker; that is what makes their images equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from diffsteer.generate import ImageRequest, SteeredGenerator

# On a CPU the batch size barely changes throughput past a dozen images; 16 keeps memory small.
CPU_BATCH_SIZE = 16
# Larger GPU batches gain little throughput and make each store write (and a lost batch) bigger.
MAX_AUTO_BATCH = 64
# Share of free GPU memory the automatic batch size may plan to use (the rest: allocator slack).
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to build the generator of a run, anywhere."""

    model: str
    steps: int = 20
    guidance: float = 7.5
    device: str = "cpu"
    dtype: str = "float32"
    batch_size: int | None = None  # None: automatic (see auto_batch_size)
    compile: bool = False
    hspace_branches: str = "conditional"  # see generate.HSPACE_BRANCHES
    num_threads: int | None = None  # torch's CPU threads; None: leave the process's setting alone

    def build(self) -> SteeredGenerator:
        """Load the model and return its generator, set up for speed (SDPA, optional compile)."""
        from diffsteer.models import load_pipeline

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        pipe = load_pipeline(self.model, device=self.device, dtype=self.dtype)
        return self.prepare(pipe)

    def prepare(self, pipe: Any) -> SteeredGenerator:
        """Wrap an already loaded pipeline (e.g. one built from configs in a benchmark)."""
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        from diffsteer.steering.lora import load_adapter, use_adapter

        use_sdpa(pipe)
        generator = SteeredGenerator(
            pipe,
            steps=self.steps,
            guidance=self.guidance,
            batch_size=self.batch_size or 1,
            hspace_branches=self.hspace_branches,
            # requests that name a LoRA folder (audit --mitigation lora:FOLDER, generate --lora) load it
            # here, in whichever process builds the generator: the folder travels with the request
            adapter_loader=load_adapter,
            adapter_switch=use_adapter,
        )
        if self.batch_size is None:
            generator.batch_size = auto_batch_size(generator)  # measured before compiling: no recompiles
        if self.compile:
            compile_unet(pipe.unet, generator.steered_block)
        return generator

    def for_planning(self) -> GeneratorSpec:
        """The same model on this process's CPU, uncompiled: enough to plan a run (fingerprint,
        shapes, tokenizers) where the driver of a Ray run has no GPU."""
        return replace(self, device="cpu", compile=False, batch_size=self.batch_size or CPU_BATCH_SIZE)


def use_sdpa(pipe: Any) -> list[str]:
    """Make the U-Net and VAE attend with PyTorch's scaled_dot_product_attention.

    diffusers picks ``AttnProcessor2_0`` (SDPA) by default on torch 2; a pipeline may still carry the
    classic ``AttnProcessor`` (e.g. after ``set_default_attn_processor``). Only those are replaced:
    custom processors (adapters, steering) are left alone. Returns the components changed.
    """
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    changed = []
    for name in ("unet", "vae"):
        model = getattr(pipe, name, None)
        processors = getattr(model, "attn_processors", None)
        if not processors:
            continue
        kinds = {type(p) for p in processors.values()}
        if AttnProcessor in kinds and kinds <= {AttnProcessor, AttnProcessor2_0}:
            model.set_attn_processor(AttnProcessor2_0())
            changed.append(name)
    return changed


def compile_unet(unet: torch.nn.Module, steered_block: str, *, backend: str = "inductor") -> None:
    """Compile the U-Net block by block (in place), leaving the steered block's own call eager.

    The h-space steering hook is registered on the steered block for each batch; were that block
    (or the whole U-Net) compiled, every new hook would force a recompilation. Its inner layers,
    and every other block, are compiled, which is where nearly all the U-Net's work is.
    """
    steered = unet.get_submodule(steered_block)
    blocks = [*unet.down_blocks, *unet.up_blocks]
    if getattr(unet, "mid_block", None) is not None:
        blocks.append(unet.mid_block)
    for block in blocks:
        if block is steered:
            for child in block.children():
                child.compile(backend=backend)
        else:
            block.compile(backend=backend)


def batch_from_memory(
    free_bytes: float,
    per_image_bytes: float,
    fixed_bytes: float = 0.0,
    *,
    headroom: float = MEMORY_HEADROOM,
    cap: int = MAX_AUTO_BATCH,
) -> int:
    """The rule of the automatic GPU batch size: ``floor((headroom * free - fixed) / per_image)``.

    Clamped to ``[1, cap]``. ``per_image`` is the peak memory one more image in a batch costs,
    ``fixed`` the part of a batch's peak that does not grow with its size.
    """
    if per_image_bytes <= 0:
        return cap
    fit = int((headroom * free_bytes - max(fixed_bytes, 0.0)) // per_image_bytes)
    return max(1, min(cap, fit))


def auto_batch_size(generator: SteeredGenerator) -> int:
    """Batch size for ``generator``'s device: 16 on a CPU; from free memory on a CUDA GPU.

    On a GPU two one-step probe generations (batches of 1 and 2) measure the peak memory of a batch
    and what each extra image adds (U-Net under guidance, VAE decode); the free memory left after
    loading then gives the batch by :func:`batch_from_memory`.
    """
    device = torch.device(generator.pipe.device)
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    peaks = []
    for n in (1, 2):
        probe = SteeredGenerator(
            generator.pipe,
            steps=1,
            guidance=generator.guidance,
            height=generator.height,
            width=generator.width,
            batch_size=n,
        )
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        probe.generate([ImageRequest(prompt="a photo of a person", seed=i) for i in range(n)])
        torch.cuda.synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info(device)
    per_image = max(peaks[1] - peaks[0], 1 << 20)
    return batch_from_memory(free, per_image, peaks[0] - per_image)
