"""What the acceptance experiments share: where their figures are recorded, how they read scale lists, and
the VAE a pictoworld training seed would train.

The experiments record into the one measured history, ``benchmarks/RESULTS.md``, beside the
performance benchmarks' sections, so a figure quoted anywhere can be traced to a dated section there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def scale_list(text: str) -> list[float]:
    """An argparse type: comma-separated non-negative numbers (guidance or rescale values)."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 0")
    return values


def recipe_vae(seed: int, n_images: int):
    """The VAE that `diffsteer pictoworld train --seed SEED --n-images N` trains (the same pictures and
    initialisation, nothing after it), and its figures (loss, reconstruction error, scaling factor)."""
    import numpy as np
    import torch

    from diffsteer.pictoworld import train, world
    from diffsteer.pictoworld.render import render_many

    cfg = train.config_from_preset("full", seed=seed, n_images=n_images)
    torch.manual_seed(cfg.seed)  # as train_pictoworld does, so the VAE starts where the recipe's does
    rng = np.random.default_rng(cfg.seed)
    pairs = world.training_pairs(rng, cfg.n_images)
    seeds = rng.integers(0, 2**31, size=len(pairs)).tolist()
    images = train._images_to_tensor(render_many([s for s, _ in pairs], seeds))
    vae, _, _, figures = train.train_vae(cfg, images, lambda *a: None)
    return vae, figures
