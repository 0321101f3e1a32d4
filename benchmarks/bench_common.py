"""Shared plumbing of the scale benchmarks: the models measured, the environment record, RESULTS.md.

Models: any reference ``load_pipeline`` accepts (``pictoworld`` by default), or ``sd15-arch`` /
``sdxl-arch``: the full-size Stable Diffusion 1.5 and SDXL architectures assembled from the public
configs in ``configs/`` (diffusers' UNet2DConditionModel / AutoencoderKL, transformers' CLIP text
models) with random weights and the project's word-level tokenizer: nothing is downloaded, and the
compute per image is that of the real checkpoints (images are noise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import torch

CONFIGS = Path(__file__).with_name("configs")
RESULTS = Path(__file__).with_name("RESULTS.md")
ARCH_MODELS = {"sd15-arch": "sd15", "sdxl-arch": "sdxl"}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROMPTS = [
    "a photo of a doctor",
    "a photo of a nurse",
    "a photo of a pilot",
    "a photo of a chef",
    "a photo of a lawyer",
    "a photo of a painter",
    "a photo of a soldier",
    "a photo of a hairdresser",
]


def default_models(device: str) -> list[str]:
    """What a script measures when no --model is given: pictoworld on a CPU, both real sizes on a GPU."""
    return ["sd15-arch", "sdxl-arch"] if device.startswith("cuda") else ["pictoworld"]


def load_model(name: str, device: str, dtype: str) -> Any:
    if name in ARCH_MODELS:
        return config_pipeline(ARCH_MODELS[name], device, dtype)
    from diffsteer.models import load_pipeline

    return load_pipeline(name, device=device, dtype=dtype)


def _json(kind: str, part: str) -> dict[str, Any]:
    return json.loads((CONFIGS / kind / f"{part}.json").read_text())


def _text_encoder(cls: Any, config: dict[str, Any]) -> Any:
    from transformers import CLIPTextConfig

    from diffsteer.tokenizer import EOS_ID

    # the project's tokenizer: its end token (pooling and padding) replaces CLIP's ids; same compute
    config = {**config, "bos_token_id": 0, "eos_token_id": EOS_ID, "pad_token_id": EOS_ID}
    return cls(CLIPTextConfig(**config))


def config_pipeline(kind: str, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Any:
    """A Stable Diffusion pipeline of the ``configs/<kind>`` architecture with random weights."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        PNDMScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from diffsteer.tokenizer import build_word_tokenizer

    torch.manual_seed(seed)
    words = [" ".join(PROMPTS) + " person man woman"]
    previous = torch.get_default_dtype()
    # initialise on the device and in the target dtype: seconds on a GPU, and half the host memory
    torch.set_default_dtype(DTYPES[dtype])
    try:
        with torch.device(device):
            unet = UNet2DConditionModel.from_config(_json(kind, "unet"))
            vae = AutoencoderKL.from_config(_json(kind, "vae"))
            text_encoder = _text_encoder(CLIPTextModel, _json(kind, "text_encoder"))
            text_encoder_2 = None
            if kind == "sdxl":
                text_encoder_2 = _text_encoder(CLIPTextModelWithProjection, _json(kind, "text_encoder_2"))
    finally:
        torch.set_default_dtype(previous)
    for model in (unet, vae, text_encoder, text_encoder_2):
        if model is not None:
            model.to(device=device, dtype=DTYPES[dtype]).eval()
    scheduler_config = _json(kind, "scheduler")
    if kind == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=build_word_tokenizer(words, max_length=77),
            tokenizer_2=build_word_tokenizer(words, max_length=77),
            unet=unet,
            scheduler=EulerDiscreteScheduler.from_config(scheduler_config),
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=build_word_tokenizer(words, max_length=77),
            unet=unet,
            scheduler=PNDMScheduler.from_config(scheduler_config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call.

    On a CPU shared with other work the CPU seconds are the steadier measure of the work done (with
    one torch thread they are the compute time itself); on a GPU only the wall time means anything.
    """
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - start, time.process_time() - cpu


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def fmt_spread(values: Sequence[float], digits: int = 3) -> str:
    lo, mid, hi = spread(values)
    return f"{mid:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def number_list(kind: Callable[[str], Any] = float, low: float | None = None, high: float | None = None):
    """An argparse type: comma-separated numbers, each in [low, high] when given; a one-line error if not."""

    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
        if any((low is not None and v < low) or (high is not None and v > high) for v in values):
            bounds = f"at least {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"{text!r}: every value must be {bounds}")
        return values

    return parse


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name


def environment(device: str, dtype: str) -> dict[str, Any]:
    import diffusers
    import transformers

    env = {
        "date": date.today().isoformat(),
        "device": device,
        "device_name": device_name(device),
        "dtype": dtype,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        env["cuda"] = torch.version.cuda
    else:
        env["cpu_cores"] = os.cpu_count()
        env["load_average_1min"] = round(os.getloadavg()[0], 2)
    return env


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def append_results(title: str, env: dict[str, Any], lines: Sequence[str], note: str = "") -> None:
    """Append a dated section with the device, library versions and the command to RESULTS.md."""
    threads = f", {env['torch_threads']} torch thread(s)" if env["device"] == "cpu" else ""
    head = [
        f"\n## {title} — {env['date']}",
        "",
        f"device: {env['device']} ({env['device_name']}{threads}), dtype {env['dtype']}; "
        f"torch {env['torch']}, diffusers {env['diffusers']}, transformers {env['transformers']}, "
        f"Python {env['python']}" + (f", CUDA {env['cuda']}" if "cuda" in env else "") + ".",
        f"Command: `{command_line()}`",
    ]
    if "load_average_1min" in env:
        head.append(
            f"The CPU ({env['cpu_cores']} cores) was shared with other jobs: 1-minute load average "
            f"{env['load_average_1min']} when the script started, so wall times are noisy."
        )
    if note:
        head += ["", note]
    with RESULTS.open("a") as fh:
        fh.write("\n".join([*head, "", *lines]) + "\n")
