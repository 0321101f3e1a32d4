"""Coverage of finetune_referee's culture interval (seeds redrawn) against Clopper-Pearson on pooled images.

Run:  .venv/bin/python benchmarks/referee_interval_coverage.py [--runs 300]

A referee pools several prompts that share their seeds (image k of every prompt starts from seed + k).
When the model ignores part of the prompt, the seed decides the outcome for every prompt alike. The
simulation: 16 prompts x 32 seeds, a true share of 0.55; each image's outcome is its seed's own draw
with probability rho, an independent draw otherwise. It prints how often each 95% interval holds
the truth.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import numpy as np
from finetune_referee import seed_cluster_interval

from diffsteer.metrics.proportion import clopper_pearson


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    n_prompts, n_seeds, truth = 16, 32, 0.55
    recs = [SimpleNamespace(prompt=f"p{p}", seed=s) for p in range(n_prompts) for s in range(n_seeds)]
    for rho in (0.0, 0.5, 0.9):
        held = {"seeds redrawn": 0, "Clopper-Pearson": 0}
        for _ in range(args.runs):
            by_seed = rng.random(n_seeds) < truth
            hits = {
                i: bool(by_seed[r.seed]) if rng.random() < rho else bool(rng.random() < truth)
                for i, r in enumerate(recs)
            }
            low, high = seed_cluster_interval(recs, hits, n_boot=1000)
            held["seeds redrawn"] += low <= truth <= high
            low, high = clopper_pearson(sum(hits.values()), len(hits))
            held["Clopper-Pearson"] += low <= truth <= high
        print(f"rho {rho}: " + ", ".join(f"{k} {v / args.runs:.3f}" for k, v in held.items()))


if __name__ == "__main__":
    main()
