"""The VAE that `diffsteer pictoworld train --seed S` would train, and its figures, for several seeds.

Run:  python research/pictoworld_vae_scaling.py SEED [SEED ...] [--n-images 44000]

A candidate's per-cell offsets follow its VAE (RESULTS.md, "does the VAE set a training seed's
offsets?"), and a VAE is 3 of a training's 85 minutes here. This trains only the VAE of each seed, as
the full recipe does (same seed, pictures and initialisation), and prints its final loss,
reconstruction error and scaling factor (1 / the latents' spread), so that VAEs can be compared
against the gate figures of the candidates trained on them.
"""

from __future__ import annotations

import argparse
import time


def vae_figures(seed: int, n_images: int) -> dict[str, float]:
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
    _, _, _, figures = train.train_vae(cfg, images, lambda *a: None)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--n-images", type=int, default=44_000, help="the v9nc recipe's training pairs")
    args = parser.parse_args()
    for seed in args.seeds:
        t0 = time.time()
        figures = vae_figures(seed, args.n_images)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
        print(f"seed {seed}: {shown} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
