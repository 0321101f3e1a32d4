"""Shared fixtures: tiny models saved to disk once per test session (built from config, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffsteer.testing import tiny_clip, tiny_sd_pipeline

# Tiny models run ~100x slower with two threads on a shared 2-core machine (thread hand-offs dominate).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """{"sd1": folder, "sdxl": folder, "clip": folder} of tiny random models in save_pretrained layout."""
    root = tmp_path_factory.mktemp("tiny_models")
    dirs = {}
    for kind in ("sd1", "sdxl"):
        tiny_sd_pipeline(kind).save_pretrained(root / kind)
        dirs[kind] = root / kind
    model, tokenizer = tiny_clip()
    model.save_pretrained(root / "clip")
    tokenizer.save_pretrained(root / "clip")
    dirs["clip"] = root / "clip"
    return dirs


def benchmark_yaml(images_per_prompt: int, subjects: tuple[str, ...] = ("doctor", "nurse")) -> str:
    """A small YAML benchmark on the gender axis: one "a photo of a <subject>" profession prompt each."""
    prompts = "".join(
        f"  - text: a photo of a {subject}\n    group: profession\n    subject: {subject}\n"
        for subject in subjects
    )
    return f"name: tiny\naxes: [gender]\nimages_per_prompt: {images_per_prompt}\nprompts:\n{prompts}"


@pytest.fixture()
def write_benchmark(tmp_path):
    """Writes :func:`benchmark_yaml` to ``tmp_path/bench.yaml`` and returns the path."""

    def write(images_per_prompt: int, subjects: tuple[str, ...] = ("doctor", "nurse")) -> Path:
        path = tmp_path / "bench.yaml"
        path.write_text(benchmark_yaml(images_per_prompt, subjects))
        return path

    return write
