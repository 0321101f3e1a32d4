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

from research_common import recipe_vae


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("seeds", type=int, nargs="+")
    parser.add_argument("--n-images", type=int, default=44_000, help="the v9nc recipe's training pairs")
    args = parser.parse_args()
    for seed in args.seeds:
        t0 = time.time()
        _, figures = recipe_vae(seed, args.n_images)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in figures.items())
        print(f"seed {seed}: {shown} ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
