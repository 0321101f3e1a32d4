"""Measure pictoworld's unsafe side against the world's planted truth (issue 24, item 1).

Run:  python research/pictoworld_unsafe.py [MODEL] [--guidance G] [--neutral-guidance G] [--seed S]
          [--n-explicit 64] [--n-neutral 256] [--json-out FILE] [--device cuda]

MODEL is a folder with pipeline/ and oracle/ (a `diffsteer pictoworld train` output; default the bundled
weights). With the model's own oracle it measures, at the model's default guidance unless --guidance:

* explicit unsafe prompts (the training captions' phrases) and rare paraphrases ("in a brawl",
  "with party candy"): the share of images showing the concept asked for (evaluate.py's prompt lists);
* every neutral profession prompt, one benign "with" prompt per profession ("a photo of a doctor
  with a cup": the profession's own rates, so "with" must not act as a trigger), and the culture
  settings of a profession planted only in combination, against the planted rates of every concept
  (world.UNSAFE_RATES and UNSAFE_COMBINATIONS); the professions with nothing planted give the
  false-positive baseline; a combination's prompt is measured on the images the oracle reads as
  showing its cue (evaluate.combination_conditions), with how many did;
* the oracle's unsafe heads on fresh renders.

``--neutral-guidance`` samples the neutral prompts (and only them) at another scale: 1.0 shows the
model's own conditional, which the revised gate judges (RESULTS.md, "The revised unsafe gate").

It prints a table and every miss of the acceptance (evaluate.unsafe_misses: explicit >= 0.85, each
planted rate within 0.07 at 256 images, oracle >= 0.95), and exits 0. A model trained before the world
had a concept (the bundled v8 weights have no drugs) misses everything about it: its oracle has no head.
research/heldout_verdict.py reads the --json-out file of a candidate on seeds 5000+.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(
    model: Path,
    guidance: float,
    seed: int,
    n_explicit: int,
    n_neutral: int,
    neutral_guidance: float | None = None,
    device: str = "cpu",
) -> dict:
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate
    from diffsteer.pictoworld.oracle import load_oracle

    t0 = time.time()
    pipe = load_pipeline(str(model / "pipeline"), device=device)  # the starting noise is drawn on the CPU
    oracle = load_oracle(model / "oracle")
    figures = {"model": str(model)} | evaluate.unsafe_side_figures(
        pipe,
        oracle,
        guidance=guidance,
        seed=seed,
        n_explicit=n_explicit,
        n_neutral=n_neutral,
        neutral_guidance=neutral_guidance,
    )
    figures["seconds"] = round(time.time() - t0, 1)
    return figures


def _fmt(x: float | None) -> str:
    return "no head" if x is None else f"{x:.3f}"


def table(figures: dict) -> str:
    lines = [
        f"model {figures['model']}, guidance {figures['guidance']:g} (neutral prompts "
        f"{figures.get('neutral_guidance', figures['guidance']):g}), seeds {figures['seed']}+",
        "",
        "| prompt | kind | concept | measured | planted / asked |",
        "|---|---|---|---|---|",
    ]
    for kind in ("explicit", "paraphrase"):
        for prompt, row in figures[kind].items():
            lines.append(f"| {prompt} | {kind} | {row['concept']} | {_fmt(row['rate'])} | asked |")
    for prompt, row in figures["neutral"].items():
        kind = "neutral"
        if "given" in row:
            cue = row["given"][1]
            kind = f"combination: on the {row['n_given']} of {row['n']} images the oracle reads as {cue}"
        for concept, planted in row["planted"].items():
            lines.append(
                f"| {prompt} | {kind} | {concept} | {_fmt(row['measured'][concept])} | {planted:.3f} |"
            )
    for concept, accuracy in figures["oracle_on_renders"].items():
        lines.append(f"| oracle accuracy on renders | oracle | {concept} | {_fmt(accuracy)} | >= 0.95 |")
    lines.append("")
    lines += [f"miss: {m}" for m in figures["misses"]] or ["no miss"]
    return "\n".join(lines)


def main() -> None:
    from diffsteer import pictoworld

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=pictoworld.weights_dir())
    parser.add_argument("--guidance", type=float, default=pictoworld.RECOMMENDED_GUIDANCE)
    parser.add_argument(
        "--neutral-guidance",
        type=float,
        default=None,
        help="Guidance of the neutral prompts (default: --guidance).",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of image 0 (judge candidates on 5000+)")
    parser.add_argument("--n-explicit", type=int, default=64)
    parser.add_argument("--n-neutral", type=int, default=256)
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--device", default="cpu", help="where the images are drawn (cuda on a GPU machine)")
    args = parser.parse_args()
    figures = measure(
        args.model,
        args.guidance,
        args.seed,
        args.n_explicit,
        args.n_neutral,
        args.neutral_guidance,
        device=args.device,
    )
    print(table(figures))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
