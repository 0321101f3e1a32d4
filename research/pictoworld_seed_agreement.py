"""Does a seed's starting noise decide who is drawn, whatever the profession and whichever model draws?

Run:  python research/pictoworld_seed_agreement.py MODEL [MODEL ...] [--n 64] [--seed 0]

MODEL is a pictoworld folder with pipeline/ and oracle/ (a candidate, or src/diffsteer/pictoworld/weights
for the bundled one). Each model draws the eight neutral profession prompts on seeds seed..seed+n-1 at its
default guidance, as the pinned neutral-share test does, and the oracle reads skin tone and gender. Printed
per model: the shares, and how alike two professions' reads are on the same seed (mean pairwise
correlation over the 28 pairs; 0 if the seed did not matter). Then per pair of models: how often they read
the same attribute on the same prompt and seed. High agreement means every model meets the same luck on a
fixed block of seeds (a block that draws few light-skinned pilots does so for every candidate), so fixed-seed
tests are not independent tries across candidates (benchmarks/RESULTS.md, "a seed decides").
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

ATTRIBUTES = {"skin_tone": "light", "gender": "man"}


def reads(model: Path, n: int, seed: int) -> dict[str, np.ndarray]:
    """Per attribute a (profession, seed) array: 1 where the oracle read the attribute's first value."""
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate, world
    from diffsteer.pictoworld.oracle import load_oracle, predict

    pipe = load_pipeline(str(model / "pipeline"), device="cpu")
    oracle = load_oracle(model / "oracle")
    prompts = [f"a photo of {world.article(p)} {p}" for p in world.PROFESSIONS]
    images = evaluate.generate_images(pipe, prompts, n, seed=seed)
    labels = [predict(oracle, images[prompt]) for prompt in prompts]
    return {
        head: np.array([[value == first for value in lab[head]] for lab in labels], dtype=float)
        for head, first in ATTRIBUTES.items()
    }


def mean_pairwise_correlation(rows: np.ndarray) -> float:
    """Mean correlation between two professions' reads over the same seeds (rows of a constant left out)."""
    varied = rows[rows.std(axis=1) > 0]
    corr = np.corrcoef(varied)
    return float(np.mean(corr[np.triu_indices(len(varied), 1)]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--n", type=int, default=64, help="seeds per profession (the pinned test's block)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (the pinned tests use 0)")
    args = parser.parse_args()
    for model in args.models:
        if not (model / "pipeline").is_dir() or not (model / "oracle").is_dir():
            parser.exit(2, f"error: {model} has no pipeline/ and oracle/ folders\n")

    all_reads = {}
    for model in args.models:
        all_reads[model] = r = reads(model, args.n, args.seed)
        print(f"{model} (seeds {args.seed}-{args.seed + args.n - 1})")
        for head, first in ATTRIBUTES.items():
            shares = " ".join(f"{s:.3f}" for s in r[head].mean(axis=1))
            corr = mean_pairwise_correlation(r[head])
            print(f"  {first} shares by profession: {shares}; across professions on a seed: r = {corr:.2f}")
    for a, b in itertools.combinations(args.models, 2):
        same = "; ".join(
            f"{head} {np.mean(all_reads[a][head] == all_reads[b][head]):.2f}"
            f" (r = {np.corrcoef(all_reads[a][head].ravel(), all_reads[b][head].ravel())[0, 1]:.2f})"
            for head in ATTRIBUTES
        )
        print(f"{a.name} / {b.name}: same read on a prompt and seed: {same}")


if __name__ == "__main__":
    main()
