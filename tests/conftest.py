"""Shared fixtures: tiny models saved to disk once per test session (built from config, no download)."""

from __future__ import annotations

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
