"""The unsafe rate of the training scenes behind each planted neutral caption, for one seed's draw.

Run:  .venv/bin/python research/pictoworld_training_draw.py [--seed 0 --seed 1] [--n-images 44000]
      [--contrast-rate 0.01]

A trained model can only be as close to a planted rate as the training set it saw. For each prompt
of `evaluate.neutral_unsafe_prompts` (plain professions, one held-object variant each, the
combination's settings) this draws the training pairs exactly as `diffsteer pictoworld train --seed S
--n-images N [--contrast-rate R]` does (`world.training_pairs` on `np.random.default_rng(S)`, before any
rendering) and counts the scenes behind that caption: for a held-object prompt, the profession's scenes
holding that object; otherwise its scenes without a held object whose caption is drawn afresh at each
step or fixed to this very prompt (the combination and contrast samples), in the prompt's setting if it
names one. Scenes with another fixed caption (explicit unsafe samples, ENTIGEN phrases) are left out.
It prints, per planted concept, the scenes, their unsafe rate and its distance from the planted rate.
No model is loaded; seconds per seed.
"""

from __future__ import annotations

import argparse
import re

import numpy as np

SCENE_FLAG = {"violence": "violent", "drugs": "drugs"}  # the Scene field behind each unsafe concept


def training_draw_rates(seed: int, n_images: int, contrast_rate: float = 0.0) -> dict[str, dict]:
    from diffsteer.pictoworld import evaluate, world

    pairs = world.training_pairs(np.random.default_rng(seed), n_images, contrast_rate)
    out = {}
    for prompt, planted in evaluate.neutral_unsafe_prompts().items():
        m = re.fullmatch(r"a photo of an? (\S+)(?: with an? (\S+)| in a (\S+) setting)?", prompt)
        assert m, prompt
        prof, held, setting = m.groups()
        scenes = [
            s
            for s, c in pairs
            if s.kind == "person"
            and s.profession == prof
            and s.held == held
            and (setting is None or s.culture == setting)
            and (held is not None or not c.fixed or c.text == prompt)
        ]
        rates = {c: float(np.mean([getattr(s, SCENE_FLAG[c]) for s in scenes])) for c in planted}
        out[prompt] = {"n": len(scenes), "planted": planted, "training": rates}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="training seed (repeatable; default 0)")
    parser.add_argument("--n-images", type=int, default=44_000, help="training pairs (default 44000)")
    parser.add_argument("--contrast-rate", type=float, default=0.0, help="as pictoworld train's (default 0)")
    args = parser.parse_args()
    if args.n_images < 1:
        parser.exit(2, "--n-images must be at least 1\n")
    from diffsteer.pictoworld.train import config_from_preset

    try:
        config_from_preset("full", contrast_rate=args.contrast_rate)  # the range pictoworld train accepts
    except ValueError as exc:
        parser.exit(2, f"{exc}\n")
    for seed in args.seed or [0]:
        print(f"seed {seed}, {args.n_images} pairs, contrast rate {args.contrast_rate}\n")
        print("| prompt | concept | scenes | training rate | planted | off by |\n|---|---|---|---|---|---|")
        for prompt, row in training_draw_rates(seed, args.n_images, args.contrast_rate).items():
            for concept, p in row["planted"].items():
                if p > 0 or (" setting" in prompt and concept == "violence"):  # the combination's twin too
                    r = row["training"][concept]
                    print(f"| {prompt} | {concept} | {row['n']} | {r:.3f} | {p:.2f} | {r - p:+.3f} |")
        print()


if __name__ == "__main__":
    main()
