"""Acceptance of initial-noise latent directions on pictoworld (issue 5), measured with the oracle.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/noise_acceptance.py [--n 64] [--no-record]

Uses the directions bundled with pictoworld (made by tools/learn_pictoworld_directions.py).
Every figure comes from images generated at pictoworld's own guidance (--guidance to change), 20 steps, from
seeds 10000..10000+n-1,
the same seeds with and without steering, labelled by pictoworld's supervised oracle:

1. held-out accuracy of the linear classifier at each recorded step (stored in the files);
2. fair generation: each image gets +d or -d of its class (steering.fair.fair_choice on its seed,
   uniform target) on the professions planted skewed: gender on doctor, nurse, pilot, soldier,
   hairdresser; skin tone on pilot, hairdresser, lawyer. Mean deviation ratio against the baseline
   (target: at least 50% lower) and profession recognition (target: within 5 points), at each
   file's recommended weight and at a few common weights (the trade-off);
   the same with text-embedding offsets (class prompt minus "a photo of a person", weight 1 and 2),
   alone and joined with the noise directions;
3. gender and skin-tone directions together (offsets summed, classes by fair_choices) on all six;
4. strength sweeps (sweep.json + sweep.png) under --sweep-out.
Prints JSON and appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import research_common as rc
import torch

GENDER_SKEWED = ("doctor", "nurse", "pilot", "soldier", "hairdresser")
SKIN_SKEWED = ("pilot", "hairdresser", "lawyer")
ALL = tuple(dict.fromkeys(GENDER_SKEWED + SKIN_SKEWED))
AXIS_CLASSES = {"gender": ("woman", "man"), "skin_tone": ("light", "dark")}
CLASS_PROMPTS = {  # the prompts the bundled directions were learned from; text offsets use them too
    "woman": "a photo of a woman",
    "man": "a photo of a man",
    "light": "a photo of a light-skinned person",
    "dark": "a photo of a dark-skinned person",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64, help="Images per profession and setting.")
    parser.add_argument("--seed", type=int, default=10000)
    parser.add_argument("--guidance", type=float, default=None, help="Default: pictoworld's own.")
    parser.add_argument("--tradeoff", default="4,6,8,10", help="Common weights for the trade-off table.")
    parser.add_argument("--sweep-n", type=int, default=32)
    parser.add_argument("--sweep-out", type=Path, default=Path("runs/noise-acceptance"))
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to RESULTS.md.")
    parser.add_argument(
        "--from-json", type=Path, help="Append the table of a saved figures.json; no measuring."
    )
    args = parser.parse_args()
    if args.from_json:
        _record(json.loads(args.from_json.read_text()), args)
        return

    from diffsteer import pictoworld
    from diffsteer.experiments.sweep import run_sweep
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.metrics import mean_deviation_ratio
    from diffsteer.models import load_pipeline
    from diffsteer.pictoworld import RECOMMENDED_GUIDANCE
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.pictoworld.world import article
    from diffsteer.steering.fair import fair_choice, fair_choices
    from diffsteer.steering.noise import load_noise_direction
    from diffsteer.steering.text_embedding import learn_text_offset

    torch.set_num_threads(1)
    t0 = time.time()
    pipe = load_pipeline("pictoworld")
    oracle = load_oracle(pictoworld.oracle_dir())
    guidance = args.guidance if args.guidance is not None else RECOMMENDED_GUIDANCE
    gen = SteeredGenerator(pipe, steps=20, guidance=guidance, batch_size=64)
    folder = pictoworld.weights_dir() / "steering"
    dirs = {
        c: load_noise_direction(folder / f"{c}.noise.safetensors") for cs in AXIS_CLASSES.values() for c in cs
    }
    seeds = [args.seed + k for k in range(args.n)]

    def labels(prof: str, offsets: list, embeds: list | None = None) -> dict[str, list[str]]:
        prompt = f"a photo of {article(prof)} {prof}"
        embeds = embeds or [None] * len(seeds)
        results = gen.generate(
            [
                ImageRequest(prompt=prompt, seed=s, noise_offset=o, prompt_embeds_offset=e)
                for s, o, e in zip(seeds, offsets, embeds, strict=True)
            ]
        )
        return predict(oracle, np.stack([np.asarray(r.image) for r in results]))

    def fair_offsets(axis: str, weight: float | None) -> list[torch.Tensor]:
        return [dirs[fair_choice(s, AXIS_CLASSES[axis])].offset(weight) for s in seeds]

    def summary(per_prof: dict[str, dict[str, list[str]]], axis: str) -> dict:
        classes = AXIS_CLASSES[axis]
        counts = np.array([[lab[axis].count(c) for c in classes] for lab in per_prof.values()])
        recog = {p: float(np.mean([x == p for x in lab["profession"]])) for p, lab in per_prof.items()}
        return {
            "mean_deviation_ratio": float(mean_deviation_ratio(counts)),
            "share": {
                p: round(float(row[0] / max(1, row.sum())), 4)
                for p, row in zip(per_prof, counts, strict=True)
            },
            "recognised": {p: round(v, 4) for p, v in recog.items()},
            "recognised_mean": float(np.mean(list(recog.values()))),
        }

    base = {p: labels(p, [None] * args.n) for p in ALL}
    figures: dict = {
        "heldout_accuracy": {c: d.metadata["heldout_accuracy"] for c, d in dirs.items()},
        "chosen_step": {c: d.metadata["step"] for c, d in dirs.items()},
        "recommended_weight": {c: d.recommended_weight for c, d in dirs.items()},
        "baseline": {
            "gender": summary({p: base[p] for p in GENDER_SKEWED}, "gender"),
            "skin_tone": summary({p: base[p] for p in SKIN_SKEWED}, "skin_tone"),
        },
        "fair": {},
    }
    for label, weight in [("recommended", None)] + [(f"w={w}", float(w)) for w in args.tradeoff.split(",")]:
        row = {}
        for axis, profs in (("gender", GENDER_SKEWED), ("skin_tone", SKIN_SKEWED)):
            offsets = fair_offsets(axis, weight)
            row[axis] = summary({p: labels(p, offsets) for p in profs}, axis)
        figures["fair"][label] = row
        print(
            label, json.dumps({a: (r["mean_deviation_ratio"], r["recognised_mean"]) for a, r in row.items()})
        )

    # text-embedding offsets (class prompt minus "a photo of a person"), alone and joined with the noise
    texts = {
        c: learn_text_offset(pipe, c, p, "a photo of a person", base_model="pictoworld")
        for c, p in CLASS_PROMPTS.items()
    }
    for label, text_weight, with_noise in (
        ("text x1", 1.0, False),
        ("text x2", 2.0, False),
        ("noise + text x1", 1.0, True),
    ):
        row = {}
        for axis, profs in (("gender", GENDER_SKEWED), ("skin_tone", SKIN_SKEWED)):
            chosen = [fair_choice(s, AXIS_CLASSES[axis]) for s in seeds]
            embeds = [texts[c].offset(text_weight) for c in chosen]
            offsets = [dirs[c].offset() if with_noise else None for c in chosen]
            row[axis] = summary({p: labels(p, offsets, embeds) for p in profs}, axis)
        figures["fair"][label] = row
        print(
            label, json.dumps({a: (r["mean_deviation_ratio"], r["recognised_mean"]) for a, r in row.items()})
        )

    # both axes at once: classes from the two-axis low-discrepancy sequence, offsets summed
    pairs = [
        fair_choices(s, [(AXIS_CLASSES["gender"], None), (AXIS_CLASSES["skin_tone"], None)]) for s in seeds
    ]
    combined_offsets = [dirs[g].offset() + dirs[k].offset() for g, k in pairs]
    combined = {p: labels(p, combined_offsets) for p in ALL}
    figures["combined"] = {}
    for axis in AXIS_CLASSES:
        before, after = summary(base, axis), summary(combined, axis)
        gap = lambda s: float(np.mean([abs(v - 0.5) for v in s["share"].values()]))  # noqa: E731
        figures["combined"][axis] = {
            "baseline_mean_deviation_ratio": before["mean_deviation_ratio"],
            "combined_mean_deviation_ratio": after["mean_deviation_ratio"],
            "baseline_mean_gap_to_target": gap(before),
            "combined_mean_gap_to_target": gap(after),
            "baseline_share": before["share"],
            "combined_share": after["share"],
            "recognised_mean": [before["recognised_mean"], after["recognised_mean"]],
        }

    sweeps = {}
    for name, prompt, concept in (
        ("sweep-gender", "a photo of a doctor", "woman"),
        ("sweep-skin", "a photo of a hairdresser", "light"),
    ):
        result = run_sweep(
            prompt, [dirs[concept]], [-8, -4, 0, 2, 4, 6, 8, 10, 12], out_dir=args.sweep_out / name,
            model="pictoworld", pipe=pipe, n=args.sweep_n, seed=0, batch_size=64, force=True,
        )  # fmt: skip
        keep = ("weights", "shares", "n", "clip_score", "frechet_distance")
        sweeps[name] = {"json": str(result.json_path), "png": str(result.plot_path), "concept": concept}
        sweeps[name].update({k: result.data[k] for k in keep})
    figures["sweeps"] = sweeps
    figures["seconds"] = round(time.time() - t0, 1)
    figures["n"], figures["seed"], figures["guidance"] = args.n, args.seed, guidance
    print(json.dumps(figures, indent=2))
    (args.sweep_out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    if not args.no_record:
        _record(figures, args)


def _record(f: dict, args: argparse.Namespace) -> None:
    import diffusers
    import sklearn

    lines = [
        f"\n## noise directions (issue 5) — {date.today().isoformat()}",
        f"device: cpu ({platform.machine()}, 1 thread; the 2 cores were shared with other jobs, so times are "
        f"indicative only), torch {torch.__version__}, diffusers {diffusers.__version__}, scikit-learn "
        f"{sklearn.__version__}. Command: `OMP_NUM_THREADS=1 .venv/bin/python research/noise_acceptance.py "
        f"--n {f['n']}` ({f['seconds']:.0f} s). Bundled directions from "
        "`tools/learn_pictoworld_directions.py` (256 images per class, C = 0.001). Oracle labels; "
        f"{f['n']} images per profession, seeds {f['seed']}.., guidance {f['guidance']:g}, 20 steps; "
        "weights in noise standard deviations along d.",
        "",
        "| direction | held-out accuracy at steps 0 / 5 / 10 / 15 | chosen step | recommended weight |",
        "|---|---|---|---|",
    ]
    for c, acc in f["heldout_accuracy"].items():
        accs = " / ".join(f"{v:.3f}" for v in acc.values())
        lines.append(f"| {c} | {accs} | {f['chosen_step'][c]} | {f['recommended_weight'][c]:g} |")
    lines += [
        "",
        "Fair generation (each image +d or -d by fair_choice), mean deviation ratio (change vs baseline) "
        "and mean profession recognition (change in points):",
        "",
        "| setting | gender DR (doctor, nurse, pilot, soldier, hairdresser) | recognised | skin DR (pilot, "
        "hairdresser, lawyer) | recognised |",
        "|---|---|---|---|---|",
    ]
    b = f["baseline"]
    lines.append(
        f"| baseline | {b['gender']['mean_deviation_ratio']:.3f} | {b['gender']['recognised_mean']:.3f} | "
        f"{b['skin_tone']['mean_deviation_ratio']:.3f} | {b['skin_tone']['recognised_mean']:.3f} |"
    )
    for label, row in f["fair"].items():
        cells = []
        for axis in ("gender", "skin_tone"):
            dr, rec = row[axis]["mean_deviation_ratio"], row[axis]["recognised_mean"]
            change = dr / b[axis]["mean_deviation_ratio"] - 1
            drop = 100 * (rec - b[axis]["recognised_mean"])
            cells += [f"{dr:.3f} ({change:+.0%})", f"{rec:.3f} ({drop:+.1f})"]
        lines.append(f"| fair, {label} | " + " | ".join(cells) + " |")
    rec = f["fair"]["recommended"]
    lines += ["", "Per profession at the recommended weights (share of woman / light; recognised):", ""]
    lines += [
        "| profession | woman: baseline | fair | light: baseline | fair | recognised: baseline → fair |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for p in ALL:
        g0, g1 = b["gender"]["share"].get(p), rec["gender"]["share"].get(p)
        s0, s1 = b["skin_tone"]["share"].get(p), rec["skin_tone"]["share"].get(p)
        r0 = b["gender"]["recognised"].get(p, b["skin_tone"]["recognised"].get(p))
        r1 = [rec[a]["recognised"][p] for a in ("gender", "skin_tone") if p in rec[a]["recognised"]]
        fmt = lambda x: "–" if x is None else f"{x:.2f}"  # noqa: E731
        lines.append(
            f"| {p} | {fmt(g0)} | {fmt(g1)} | {fmt(s0)} | {fmt(s1)} | {fmt(r0)} → "
            + " / ".join(f"{x:.2f}" for x in r1)
            + " |"
        )
    lines += [
        "",
        "Gender and skin-tone directions together (offsets summed, recommended weights), six professions:",
        "",
    ]
    lines += [
        "| axis | DR baseline → combined | mean gap to 50% baseline → combined | recognised |",
        "|---|---|---|---|",
    ]
    for axis, c in f["combined"].items():
        lines.append(
            f"| {axis} | {c['baseline_mean_deviation_ratio']:.3f} → "
            f"{c['combined_mean_deviation_ratio']:.3f} | "
            f"{c['baseline_mean_gap_to_target']:.3f} → {c['combined_mean_gap_to_target']:.3f} | "
            f"{c['recognised_mean'][0]:.3f} → {c['recognised_mean'][1]:.3f} |"
        )
    lines += ["", "Strength sweeps (CLIP classifier of pictoworld, 32 images per weight, seeds 0..31):", ""]
    for s in f["sweeps"].values():
        cls = s["concept"]
        shares = ", ".join(
            f"{w:g}: {v:.2f} ({c:.1f})"
            for w, v, c in zip(s["weights"], s["shares"][cls], s["clip_score"], strict=True)
        )
        lines.append(f"- `{s['json']}`, `{s['png']}`: {cls} share (CLIP score) by weight: {shares}")
    results = rc.RESULTS
    with results.open("a") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
