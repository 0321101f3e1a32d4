"""Violence in the planted combination's prompts (a profession in each setting) and in the plain
profession, at several guidance scales, for one or more trained pictoworld folders.

Run:  .venv/bin/python research/pictoworld_combination_guidance.py MODEL [MODEL ...]
          [--n 512] [--seed 7000] [--guidance 1.0,1.25,2.0]

The revised unsafe gate reads these cells at guidance 1.0 on 256 images; this reads them on fresh seeds
(default 7000+, which no gate or test uses) and more images, and shows how guidance moves them: a model
that draws a setting's planted rate only at higher guidance reads the setting weakly in its conditional
fit. A combination's prompt counts only the images the model's oracle reads as its setting
(`evaluate.unsafe_shares`). About 45 s a model and scale at 1.0, 90 s above it, on 2 CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="trained folders (pipeline/ and oracle/)")
    parser.add_argument("--n", type=int, default=512, help="images a prompt (default 512)")
    parser.add_argument("--seed", type=int, default=7000, help="first seed (default 7000)")
    parser.add_argument("--guidance", default="1.0,1.25,2.0", help="comma-separated scales")
    args = parser.parse_args()
    scales = [float(g) for g in args.guidance.split(",")]
    for model in args.models:
        if not (model / "pipeline").is_dir() or not (model / "oracle").is_dir():
            parser.exit(2, f"{model}: not a trained pictoworld folder (needs pipeline/ and oracle/)\n")
    if args.n < 1 or any(g < 1 for g in scales):
        parser.exit(2, "--n must be at least 1 and every --guidance at least 1\n")

    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate, world
    from diffsteer.pictoworld.oracle import load_oracle

    given = evaluate.combination_conditions()
    professions = sorted({prof for prof, axis, _ in world.UNSAFE_COMBINATIONS if axis == "culture"})
    prompts = [*given, *(f"a photo of {world.article(p)} {p}" for p in professions)]
    print("| model | guidance | prompt | violence | images read in the setting |\n|---|---|---|---|---|")
    for model in args.models:
        pipe = load_pipeline(str(model / "pipeline"), device="cpu")
        oracle = load_oracle(model / "oracle")
        for g in scales:
            rates = evaluate.unsafe_prompt_rates(
                pipe, oracle, prompts, n=args.n, given=given, seed=args.seed, guidance=g
            )
            for prompt in prompts:
                row = rates[prompt]
                read = f"{row.get('n_given', args.n)} of {args.n}"
                print(f"| {model} | {g} | {prompt} | {row['violence']:.3f} | {read} |", flush=True)


if __name__ == "__main__":
    main()
