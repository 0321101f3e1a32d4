"""How often would an EXACT model pass the pictoworld acceptance rules? Sampling noise alone, simulated.

Run:  .venv/bin/python benchmarks/audit_rule_power.py [--trials 4000] [--images 64,96,128,192,256]

An exact model draws each profession's gender and skin tone with the planted shares. Each simulated
audit draws that many images per prompt, lets a classifier flip each label with probability e (no
abstentions), and applies the rules the pinned tests apply, the library's own functions:
``evaluate.audit_misses`` (deviation ratio within 0.12, controls at most 0.2) and
``evaluate.neutral_share_misses`` (oracle shares within 0.12). The figure per row is the share of
simulated runs with no miss at all, and the mean number of missed cells.

Why it matters: a deviation ratio is twice a share's distance from 0.5, so its sampling error is twice
the share's; at 96 images per prompt, the default audit's, the 0.12 tolerance is about 1.5 standard
errors on a cell, and with twelve cells checked an exact model misses somewhere most of the time.
A candidate judged on one such audit is mostly judged on its seeds.
"""

from __future__ import annotations

import argparse

import bench_common as bc
import numpy as np

from diffsteer.pictoworld import evaluate, world
from diffsteer.summary import Summary


def _draw_counts(rng, n: int, share: float, flip: float) -> int:
    """Images the classifier calls the first class, out of n from an exact model."""
    true = rng.binomial(n, share)
    return true - rng.binomial(true, flip) + rng.binomial(n - true, flip)


def audit_pass_rate(n: int, flip: float, trials: int, rng) -> tuple[float, float]:
    """(share of simulated default audits with no miss, mean misses) for an exact model."""
    first = {"gender": "man", "skin_tone": "light"}
    cells = [
        (f"a photo of {world.article(prof)} {prof}", axis, world.planted_shares(prof)[axis][cls])
        for prof in world.PROFESSIONS
        for axis, cls in first.items()
    ]
    clean, total = 0, 0
    for _ in range(trials):
        results = []
        for prompt, axis, share in cells:
            k = _draw_counts(rng, n, share, flip)
            dr = abs(2 * k - n) / n  # deviation ratio of two classes
            results.append({"mitigation": "none", "axis": axis, "prompt": prompt, "deviation_ratio": dr})
        summary = Summary.from_dict({"results": results})
        misses = evaluate.audit_misses(summary, tolerance=0.12, control_limit=0.2)
        clean += not misses
        total += len(misses)
    return clean / trials, total / trials


def neutral_pass_rate(n: int, trials: int, rng) -> tuple[float, float]:
    """The same for the neutral-share rule (oracle shares, taken as exact)."""
    planted = {prof: world.planted_shares(prof) for prof in world.PROFESSIONS}
    clean, total = 0, 0
    for _ in range(trials):
        stats = {
            prof: {
                "man_share": rng.binomial(n, p["gender"]["man"]) / n,
                "light_share": rng.binomial(n, p["skin_tone"]["light"]) / n,
            }
            for prof, p in planted.items()
        }
        misses, _ = evaluate.neutral_share_misses(stats, tolerance=0.12)
        clean += not misses
        total += len(misses)
    return clean / trials, total / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4000)
    parser.add_argument(
        "--images", type=bc.number_list(int, 1), default="64,96,128,192,256", help="images per prompt"
    )
    parser.add_argument(
        "--flip", type=bc.number_list(float, 0, 0.5), default="0,0.02,0.04", help="classifier errors"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sizes, flips = args.images, args.flip
    print(f"exact model, {args.trials} simulated runs per row\n")
    print("| rule | images per prompt | classifier error | P(no miss) | mean misses |")
    print("|---|---|---|---|---|")
    for n in sizes:
        for flip in flips:
            rate, mean = audit_pass_rate(n, flip, args.trials, rng)
            print(f"| default audit | {n} | {flip:.2f} | {rate:.3f} | {mean:.2f} |")
    for n in sizes:
        rate, mean = neutral_pass_rate(n, args.trials, rng)
        print(f"| neutral shares (oracle) | {n} | exact | {rate:.3f} | {mean:.2f} |")


if __name__ == "__main__":
    main()
