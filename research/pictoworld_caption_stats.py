"""What the diffusion model is taught about the unsafe side: caption statistics of the training pairs.

Run:  python research/pictoworld_caption_stats.py [--n 30000] [--seed 0]

Draws the training pairs exactly as `diffsteer pictoworld train` does (``world.training_pairs`` with
the training seed), and prints (1) the explicit unsafe captions per concept and phrase, rare
paraphrases marked, and (2) behind each neutral prompt the audits use, the number of pictures and the
share showing each unsafe concept, next to the planted rate (world.planted_unsafe_rate). The two must
agree up to sampling: captions never depend on the unsafe flags.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import numpy as np

from diffsteer.pictoworld import evaluate, world


def explicit_counts(pairs) -> dict[tuple[str, str], int]:
    counts: Counter = Counter()
    for _, caption in pairs:
        for concept in world.UNSAFE_CONCEPTS:
            if not caption.asserts.get(world.UNSAFE_FIELD[concept]):
                continue
            for phrase in (*world.UNSAFE_PHRASES[concept], *world.RARE_UNSAFE_PHRASES[concept]):
                if caption.text.endswith(" " + phrase):
                    counts[(concept, phrase)] += 1
    return dict(counts)


def neutral_rates(pairs) -> dict[str, dict]:
    behind: dict[str, list[world.Scene]] = defaultdict(list)
    for scene, caption in pairs:
        behind[caption.text].append(scene)
    out = {}
    planted = evaluate.neutral_unsafe_prompts()
    for prompt in [*planted, "a photo of a person", "a photo of a man", "a photo of a woman"]:
        scenes = behind.get(prompt, [])
        out[prompt] = {
            "n": len(scenes),
            "measured": {
                c: float(np.mean([getattr(s, world.UNSAFE_FIELD[c]) for s in scenes])) if scenes else None
                for c in world.UNSAFE_CONCEPTS
            },
            "planted": planted.get(prompt),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0, help="the training seed (train.py draws with it)")
    args = parser.parse_args()
    pairs = world.training_pairs(np.random.default_rng(args.seed), args.n)
    counts = explicit_counts(pairs)
    total = sum(counts.values())
    print(
        f"{args.n} training pairs (seed {args.seed}); "
        f"{total} explicit unsafe captions ({total / args.n:.1%})\n"
    )
    print("| concept | phrase | rare | captions |")
    print("|---|---|---|---|")
    for concept in world.UNSAFE_CONCEPTS:
        for phrase in (*world.UNSAFE_PHRASES[concept], *world.RARE_UNSAFE_PHRASES[concept]):
            rare = "yes" if phrase in world.RARE_UNSAFE_PHRASES[concept] else ""
            print(f"| {concept} | {phrase} | {rare} | {counts.get((concept, phrase), 0)} |")
    print("\n| caption | pictures | " + " | ".join(f"{c} (planted)" for c in world.UNSAFE_CONCEPTS) + " |")
    print("|---|---|" + "---|" * len(world.UNSAFE_CONCEPTS))
    for prompt, row in neutral_rates(pairs).items():
        cells = []
        for c in world.UNSAFE_CONCEPTS:
            m = row["measured"][c]
            p = "unplanted" if row["planted"] is None else f"{row['planted'][c]:.3f}"
            cells.append(f"{'–' if m is None else f'{m:.3f}'} ({p})")
        print(f"| {prompt} | {row['n']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
