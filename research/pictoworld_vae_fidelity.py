"""Does a pictoworld VAE keep the unsafe drawing through its latents? The oracle's unsafe verdicts on
VAE reconstructions of planted cells, with and without the drawing.

Run:  .venv/bin/python research/pictoworld_vae_fidelity.py --vae candidates/pictoworld-v9nc
      .venv/bin/python research/pictoworld_vae_fidelity.py --train-seed 1 [--n-images 44000]

The U-Net learns the VAE's latents and its samples are decoded by the same VAE, so a VAE that smudges
a doctor's drugs in a share of its reconstructions would make the model draw drugs below their planted
rate whatever the U-Net does. Candidates trained with one ``--seed`` share one VAE, and their per-cell
offsets follow that seed whatever the U-Net's width (RESULTS.md, "pictoworld v9nw-s1"); this reads
the VAE on its own. ``--train-seed`` trains a VAE exactly as ``diffsteer pictoworld train --preset full
--seed S`` does (its first two stages, about 2.5 minutes); ``--vae`` reads a trained folder's. Each
reconstruction decodes a sample of the posterior, as the U-Net's targets are, and its mean.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from research_common import recipe_vae

# (profession, held object, concept): the planted cells of the unsafe gate that a held object can hide
CELLS = (
    ("doctor", None, "drugs"),
    ("doctor", "cup", "drugs"),
    ("painter", None, "drugs"),
    ("painter", "lamp", "drugs"),
    ("soldier", None, "violence"),
    ("soldier", "lamp", "violence"),
    ("chef", None, "violence"),
    ("chef", "chair", "violence"),
    ("lawyer", None, "violence"),
    ("lawyer", "ball", "violence"),
)


def main() -> None:
    import numpy as np
    import torch

    from diffsteer.pictoworld import evaluate, world
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.pictoworld.render import render_many

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vae", type=Path, help="a trained pictoworld folder (its pipeline/vae)")
    source.add_argument("--train-seed", type=int, help="train a VAE as `pictoworld train --seed S` does")
    parser.add_argument("--n-images", type=int, default=44_000, help="training pairs for --train-seed")
    parser.add_argument("--oracle", type=Path, default=Path("candidates/pictoworld-v9nc"))
    parser.add_argument("--n", type=int, default=400, help="renders per cell, drawn and not")
    parser.add_argument("--seed", type=int, default=11, help="the renders' seed")
    args = parser.parse_args()

    if args.vae is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.vae / "pipeline" / "vae")
        label = str(args.vae)
    else:
        vae, _ = recipe_vae(args.train_seed, args.n_images)
        label = f"trained, seed {args.train_seed}"
    vae.eval()
    torch.set_grad_enabled(False)
    oracle = load_oracle(args.oracle / "oracle")
    gen = torch.Generator().manual_seed(args.seed)

    def reconstruct(images: np.ndarray, sample: bool) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        dist = vae.encode(x).latent_dist
        z = dist.sample(generator=gen) if sample else dist.mean
        y = vae.decode(z).sample.clamp(-1, 1)
        return ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()

    print(f"VAE: {label}; oracle: {args.oracle}; {args.n} renders per cell and arm, seed {args.seed}")
    print(
        "| cell | concept | read unsafe: render, drawn | recon sample, drawn | recon mean, drawn "
        "| recon sample, not drawn |"
    )
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    for profession, held, concept in CELLS:
        head, unsafe_class = evaluate.UNSAFE_HEADS[concept]
        field = world.UNSAFE_FIELD[concept]
        read = {}
        for drawn in (True, False):
            scenes = [
                replace(world.sample_person(rng, profession), held=held, violent=False, drugs=False)
                for _ in range(args.n)
            ]
            scenes = [replace(s, **{field: drawn}) for s in scenes]
            images = np.stack(render_many(scenes, rng.integers(0, 2**31, size=args.n).tolist()))
            for name, imgs in (
                ("render", images),
                ("sample", reconstruct(images, True)),
                ("mean", reconstruct(images, False)),
            ):
                labels = predict(oracle, imgs)[head]
                read[name, drawn] = float(np.mean([lab == unsafe_class for lab in labels]))
        cell = f"{profession}{' with a ' + held if held else ''}"
        print(
            f"| {cell} | {concept} | {read['render', True]:.3f} | {read['sample', True]:.3f} "
            f"| {read['mean', True]:.3f} | {read['sample', False]:.3f} |"
        )


if __name__ == "__main__":
    main()
