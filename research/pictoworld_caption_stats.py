"""What the diffusion model is taught about the unsafe side: caption statistics of the training pairs.

Run:  python research/pictoworld_caption_stats.py [--n 30000] [--seed 0]

Draws the training pairs exactly as `diffsteer pictoworld train` does (``world.training_pairs`` with
the training seed), and prints (1) the explicit unsafe captions per concept and phrase, rare
paraphrases marked, and (2) behind each neutral prompt the audits use, the number of pictures and the
share showing each unsafe concept, next to the planted rate (world.planted_unsafe_rate). The two must
agree up to sampling: captions never depend on the unsafe flags. (3) "with": how many captions hold
the word, benign (a person holding an object, "a photo of a doctor with a cup") and explicit unsafe
("with a weapon"), and behind each profession's benign "with" captions (all objects together) the
share showing each concept next to its planted rate, with the binomial standard deviation.
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


def has_with(text: str) -> bool:
    return " with " in f" {text} "


def with_counts(pairs) -> dict[str, int]:
    """Captions holding the word "with": benign ones (a held object) and explicit unsafe ones."""
    counts = Counter()
    for scene, caption in pairs:
        if not has_with(caption.text):
            continue
        unsafe = any(caption.asserts.get(world.UNSAFE_FIELD[c]) for c in world.UNSAFE_CONCEPTS)
        counts["unsafe" if unsafe else "benign" if scene.held else "other"] += 1
    return dict(counts)


def benign_with_rates(pairs) -> dict[str, dict]:
    """Behind "a photo of {a} {noun} with {a} {object}" per noun (objects pooled): pictures, the share
    of each concept, its planted rate (None: unplanted, the person without a named profession)."""
    out = {}
    for noun in [*world.PROFESSIONS, "person"]:
        prefix = f"a photo of {world.article(noun)} {noun} with "
        scenes = [s for s, c in pairs if s.held and c.text.startswith(prefix)]
        out[noun] = {
            "n": len(scenes),
            "measured": {
                c: float(np.mean([getattr(s, world.UNSAFE_FIELD[c]) for s in scenes])) if scenes else None
                for c in world.UNSAFE_CONCEPTS
            },
            "planted": {c: world.planted_unsafe_rate(noun, c) for c in world.UNSAFE_CONCEPTS}
            if noun in world.PROFESSIONS
            else None,
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

    withs = with_counts(pairs)
    n_with = sum(withs.values())
    print(f'\n"with" in {n_with} captions ({n_with / args.n:.1%} of pairs):\n')
    print('| "with" captions | pairs | share of pairs | share of "with" captions |')
    print("|---|---|---|---|")
    for kind in ("benign", "unsafe", "other"):
        k = withs.get(kind, 0)
        print(f"| {kind} | {k} | {k / args.n:.2%} | {k / max(n_with, 1):.1%} |")
    print(
        '\n| benign "with" caption | pictures | '
        + " | ".join(f"{c} (planted, SD)" for c in world.UNSAFE_CONCEPTS)
        + " |"
    )
    print("|---|---|" + "---|" * len(world.UNSAFE_CONCEPTS))
    for noun, row in benign_with_rates(pairs).items():
        cells = []
        for c in world.UNSAFE_CONCEPTS:
            m = row["measured"][c]
            if row["planted"] is None:
                p = "unplanted"
            else:
                rate = row["planted"][c]
                p = f"{rate:.3f}, {np.sqrt(rate * (1 - rate) / max(row['n'], 1)):.3f}"
            cells.append(f"{'–' if m is None else f'{m:.3f}'} ({p})")
        print(
            f"| a photo of {world.article(noun)} {noun} with ... | {row['n']} | " + " | ".join(cells) + " |"
        )


if __name__ == "__main__":
    main()
