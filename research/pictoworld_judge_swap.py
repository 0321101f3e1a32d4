"""Is a candidate's miss in its drawing or in its judge? The gate's planted cells, one image set, judged
by several models' oracles.

Run:  python research/pictoworld_judge_swap.py MODEL --oracle DIR [--oracle DIR ...] [--seed 5000]
          [--n 256] [--guidance 1.0] [--json-out FILE]

Each `diffsteer pictoworld train --seed S` run trains its own oracle (and VAE) from S, so candidates
that share a training seed share their judge as well as their training draw. This draws the planted
neutral prompts of the unsafe gate (`evaluate.neutral_unsafe_prompts`, at the gate's neutral guidance
1.0 and seeds) once with MODEL, then reads the same images with MODEL's own oracle and with every
--oracle folder. Per planted cell it prints measured minus planted under each judge, and per judge the
spread beyond binomial noise (the root of the mean of deviation squared minus p(1-p)/n over the cells
planted above zero; RESULTS.md, "Where the misses come from"). If the deviations move with the judge,
the oracle's reading of generated images, not the U-Net, sets them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def judge_swap(model: Path, oracles: list[Path], seed: int, n: int, guidance: float) -> dict:
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import evaluate
    from diffsteer.pictoworld.oracle import load_oracle

    pipe = load_pipeline(str(model / "pipeline"))
    planted = evaluate.neutral_unsafe_prompts()
    given = evaluate.combination_conditions()
    images = evaluate.generate_images(pipe, list(planted), n, seed=seed, guidance=guidance)
    judges = {str(d): load_oracle(d / "oracle") for d in [model, *oracles]}
    out: dict = {"model": str(model), "seed": seed, "n": n, "guidance": guidance, "judges": {}}
    for name, oracle in judges.items():
        cells = {}
        for prompt, rates in planted.items():
            shares = evaluate.unsafe_shares(oracle, images[prompt], given.get(prompt))
            n_used = int(shares.pop("n_given", n))
            for concept, p in rates.items():
                cells[f"{prompt} | {concept}"] = {"planted": p, "measured": shares[concept], "n": n_used}
        out["judges"][name] = {"cells": cells, "spread": spread(cells)}
    return out


def spread(cells: dict) -> float | None:
    """Root mean square deviation beyond binomial noise over the cells planted above zero."""
    excess = [
        (c["measured"] - c["planted"]) ** 2 - c["planted"] * (1 - c["planted"]) / c["n"]
        for c in cells.values()
        if c["planted"] > 0 and c["measured"] is not None and c["n"] > 0
    ]
    if not excess:
        return None
    return math.sqrt(max(0.0, sum(excess) / len(excess)))


def table(result: dict) -> str:
    names = list(result["judges"])
    short = [f"oracle {i}" for i in range(len(names))]
    lines = [
        f"images: {result['model']}, seeds {result['seed']}+, {result['n']} a prompt, "
        f"guidance {result['guidance']:g}"
    ]
    lines += [
        f"  {s}: {name}/oracle" + (" (the model's own)" if i == 0 else "")
        for i, (s, name) in enumerate(zip(short, names, strict=True))
    ]
    lines += [
        "",
        "| cell | planted | " + " | ".join(f"{s} dev" for s in short) + " |",
        "|---|---|" + "---|" * len(short),
    ]
    first = result["judges"][names[0]]["cells"]
    for cell, row in first.items():
        if row["planted"] <= 0:
            continue
        devs = []
        for name in names:
            m = result["judges"][name]["cells"][cell]["measured"]
            devs.append("no head" if m is None else f"{m - row['planted']:+.3f}")
        lines.append(f"| {cell} | {row['planted']:.3f} | " + " | ".join(devs) + " |")
    lines += [
        "",
        "| judge | spread beyond sampling | false positives (cells planted 0, mean) |",
        "|---|---|---|",
    ]
    for s, name in zip(short, names, strict=True):
        cells = result["judges"][name]["cells"].values()
        zeros = [c["measured"] for c in cells if c["planted"] == 0 and c["measured"] is not None]
        sp = result["judges"][name]["spread"]
        fp = sum(zeros) / len(zeros) if zeros else float("nan")
        lines.append(f"| {s} | {'n/a' if sp is None else f'{sp:.3f}'} | {fp:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument(
        "--oracle",
        type=Path,
        action="append",
        default=[],
        help="another trained model folder whose oracle/ also judges (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    for folder in [args.model, *args.oracle]:
        if not (folder / "oracle").is_dir():
            parser.exit(2, f"error: {folder} has no oracle/ folder\n")
    if args.n < 1:
        parser.exit(2, "error: --n must be at least 1\n")
    result = judge_swap(args.model, args.oracle, args.seed, args.n, args.guidance)
    print(table(result))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
