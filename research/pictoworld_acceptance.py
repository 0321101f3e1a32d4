"""Measure the bundled pictoworld model against its planted ground truth (issue: pictoworld acceptance).

Run:  .venv/bin/python research/pictoworld_acceptance.py [--n-explicit 32] [--n-neutral 64] [--seed 0]
          [--guidance G] [--json-out FILE]
Prints every figure as JSON and appends a dated section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import research_common as rc
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-explicit", type=int, default=32)
    parser.add_argument("--n-neutral", type=int, default=64)
    parser.add_argument("--n-renders", type=int, default=400)
    parser.add_argument("--guidance", type=float, default=None, help="Default: pictoworld's own.")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of image 0 (default 0, the tests' seeds). Judge a retrained candidate on other seeds "
        "(e.g. 5000) first, so the pinned tests stay a held-out check.",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument(
        "--json-out", type=Path, default=None, help="also write the figures to this JSON file"
    )
    args = parser.parse_args()

    from diffsteer import pictoworld
    from diffsteer.attributes import ClipZeroShotClassifier
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate
    from diffsteer.pictoworld.oracle import load_oracle

    guidance = args.guidance if args.guidance is not None else pictoworld.RECOMMENDED_GUIDANCE
    t0 = time.time()
    pipe = load_pipeline("pictoworld")
    oracle = load_oracle(pictoworld.oracle_dir())
    clip = ClipZeroShotClassifier.from_pretrained(str(pictoworld.clip_dir()))
    explicit = evaluate.explicit_accuracy(pipe, oracle, n=args.n_explicit, guidance=guidance, seed=args.seed)
    neutral = evaluate.neutral_profession_stats(
        pipe, oracle, n=args.n_neutral, guidance=guidance, seed=args.seed
    )
    renders = evaluate.clip_render_accuracy(clip, n=args.n_renders)
    gen = evaluate.generate_images(
        pipe,
        ["a photo of a person", "a photo of a doctor", "a photo of a nurse"],
        args.n_neutral,
        guidance=guidance,
        seed=args.seed,
    )
    import numpy as np

    agreement = evaluate.clip_oracle_agreement(clip, oracle, np.concatenate(list(gen.values())))
    figures = {
        "explicit_prompt_accuracy": explicit,
        "neutral_professions": neutral,
        "clip_zero_shot_on_renders": renders,
        "clip_oracle_agreement_on_generated": agreement,
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")
    if args.no_record:
        return
    lines = [
        f"\n## pictoworld acceptance — {date.today().isoformat()}",
        f"device: cpu ({platform.machine()}, {torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"guidance {guidance:g}, 20 steps, seeds {args.seed}..{args.seed}+n-1",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for prompt, acc in explicit.items():
        lines.append(f"| explicit '{prompt}' (oracle) | {acc:.3f} |")
    for prof, s in neutral.items():
        lines.append(
            f"| {prof}: man share {s['man_share']:.3f} (planted {s['planted_man_share']:.2f}), light share "
            f"{s['light_share']:.3f} (planted {s['planted_light_share']:.2f}), recognised | "
            f"{s['recognised']:.3f} |"
        )
    lines.append(f"| CLIP zero-shot on renders, gender | {renders['gender']:.3f} |")
    lines.append(f"| CLIP zero-shot on renders, skin tone | {renders['skin_tone']:.3f} |")
    lines.append(f"| CLIP vs oracle on generated, gender | {agreement['gender']:.3f} |")
    lines.append(f"| CLIP vs oracle on generated, skin tone | {agreement['skin_tone']:.3f} |")
    results = rc.RESULTS
    with results.open("a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
