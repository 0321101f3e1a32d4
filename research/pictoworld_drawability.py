"""Can the unsafe drawings survive a VAE? A cheap check of the world's renderer before an hour of training.

Run:  python research/pictoworld_drawability.py [--vae FOLDER] [--train-vae] [--n 512] [--seed 0]

Renders ``--n`` scenes per kind (violent, with drugs, safe: people of every profession and none),
passes them through a VAE (encode to the latent mean and decode), trains a fresh oracle with
train.py's recipe (``train_oracle``, about half a minute on one core), and prints each unsafe head's
accuracy on (a) the renders and (b) their VAE reconstructions, with the recall on the unsafe kind and
the false-positive rate on the other kinds. The issue's bar for the oracle is 0.95 on renders; a
drawing that falls below it after the VAE is one the diffusion model cannot learn either.

The VAEs: the bundled pipeline's (``--vae``, default), which was trained on the world of its own
version and never saw a drawing added later, and with ``--train-vae`` a fresh one trained by
train.py's ``train_vae`` on this world's training pairs (the full recipe: 30,000 pictures, 1,500
steps, about 9 minutes on one core; ``--vae-steps``/``--vae-images`` for less), the VAE a retrained
candidate would get. ``--save-vae DIR`` keeps it.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from diffsteer.pictoworld import pipeline_dir, world
from diffsteer.pictoworld.oracle import predict
from diffsteer.pictoworld.render import render_many
from diffsteer.pictoworld.train import PRESETS, train_oracle

KINDS = ("violent", "drugs", "safe")


def scenes_of_kind(rng: np.random.Generator, kind: str, n: int) -> list[world.Scene]:
    professions = [None, *world.PROFESSIONS]
    out = []
    for _ in range(n):
        scene = world.sample_person(rng, professions[rng.integers(len(professions))])
        out.append(replace(scene, violent=kind == "violent", drugs=kind == "drugs"))
    return out


def reconstruct(vae_folder: Path, images: np.ndarray) -> np.ndarray:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_folder, torch_dtype=torch.float32).eval()
    return reconstruct_with(vae, images)


def train_fresh_vae(seed: int, n_images: int, steps: int, save: Path | None):
    from diffsteer.pictoworld.train import _images_to_tensor, train_vae

    cfg = replace(PRESETS["full"], seed=seed, n_images=n_images, vae_steps=steps)
    rng = np.random.default_rng(cfg.seed)  # as train_pictoworld draws its pairs
    pairs = world.training_pairs(rng, cfg.n_images)
    images = _images_to_tensor(
        render_many([s for s, _ in pairs], rng.integers(0, 2**31, size=len(pairs)).tolist())
    )
    vae, *_ = train_vae(cfg, images, lambda *a: None)
    if save is not None:
        vae.save_pretrained(save, safe_serialization=True)
    return vae


@torch.no_grad()
def reconstruct_with(vae, images: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(images), 256):
        x = torch.from_numpy(images[i : i + 256]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def head_figures(labels: dict[str, list[str]], kinds: list[str]) -> dict[str, dict[str, float]]:
    figures = {}
    for head, kind, unsafe_class in (("violence", "violent", "violent"), ("drugs", "drugs", "drugs")):
        said = np.array([lab == unsafe_class for lab in labels[head]])
        truth = np.array([k == kind for k in kinds])
        figures[head] = {
            "accuracy": float(np.mean(said == truth)),
            "recall": float(np.mean(said[truth])),
            "false_positive": float(np.mean(said[~truth])),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", type=Path, default=pipeline_dir() / "vae")
    parser.add_argument("--n", type=int, default=512, help="scenes per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-vae", action="store_true", help="also a fresh VAE trained on this world")
    parser.add_argument("--vae-images", type=int, default=PRESETS["full"].n_images)
    parser.add_argument("--vae-steps", type=int, default=PRESETS["full"].vae_steps)
    parser.add_argument("--save-vae", type=Path, default=None)
    parser.add_argument("--skip-bundled", action="store_true", help="only the fresh VAE")
    args = parser.parse_args()

    rng = np.random.default_rng(10_000 + args.seed)
    kinds = [k for k in KINDS for _ in range(args.n)]
    scenes = [s for k in KINDS for s in scenes_of_kind(rng, k, args.n)]
    renders = render_many(scenes, rng.integers(0, 2**31, size=len(scenes)).tolist())
    sets = [("renders", renders)]
    if not args.skip_bundled:
        sets.append((f"reconstructed by {args.vae}", reconstruct(args.vae, renders)))
    if args.train_vae:
        t = time.time()
        vae = train_fresh_vae(args.seed, args.vae_images, args.vae_steps, args.save_vae)
        print(f"fresh VAE: {args.vae_images} pictures, {args.vae_steps} steps ({time.time() - t:.0f} s)")
        sets.append(("reconstructed by the fresh VAE", reconstruct_with(vae, renders)))
    t = time.time()
    oracle, _ = train_oracle(replace(PRESETS["full"], seed=args.seed), lambda *a: None)
    print(f"fresh oracle trained with train_oracle ({time.time() - t:.0f} s)")
    print(f"{args.n} scenes per kind ({', '.join(KINDS)}); people of every profession and none\n")
    print("| images | head | accuracy | recall (unsafe kind) | false positives (other kinds) |")
    print("|---|---|---|---|---|")
    for name, images in sets:
        for head, f in head_figures(predict(oracle, images), kinds).items():
            print(
                f"| {name} | {head} | {f['accuracy']:.3f} | {f['recall']:.3f} | {f['false_positive']:.3f} |"
            )


if __name__ == "__main__":
    main()
