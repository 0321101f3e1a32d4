"""hspace-fair on held-out seeds, oracle labels: the bundled h-space vectors at strength 1 and as stored.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/hspace_fair_heldout.py [--n 64] [--seed 600000]
      [--settings none,hspace-1,hspace-fair,noise-fair] [--json runs/hspace-fair-heldout.json]

Every image is generated at pictoworld's own guidance (--guidance to change), 20 steps, from seeds
seed..seed+n-1 (the same seeds in every setting), and labelled by pictoworld's supervised oracle
(gender, skin tone, profession). Settings, each on the professions the model skews (gender: doctor,
nurse, pilot, soldier, hairdresser; skin tone: pilot, hairdresser, lawyer):

- ``none``: the prompt as written;
- ``hspace-1``: fair generation with the axis's h-space vectors at strength 1, the fixed strength
  before the vectors were calibrated (each image gets its class's vector by ``fair_choice``);
- ``hspace-fair``: the audit's ``hspace-fair`` mitigation itself (``Steerer``), which applies each
  vector at the strength stored in its file (the fair-mixture calibration; 1 for an uncalibrated file);
- ``noise-fair``: the audit's ``noise-fair`` mitigation (the noise directions at their stored weight).

Reports per axis the mean deviation ratio (DR) and the mean profession recognition, and per
profession the first class's share. Settings already in ``--json`` are kept, so settings can be
measured in separate runs; ``--force`` measures them again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

AXES = {
    "gender": ("doctor", "nurse", "pilot", "soldier", "hairdresser"),
    "skin_tone": ("pilot", "hairdresser", "lawyer"),
}
SHARE_OF = {"gender": "woman", "skin_tone": "light"}
SETTINGS = ("none", "hspace-1", "hspace-fair", "noise-fair")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=64, help="Images per profession and setting.")
    parser.add_argument("--seed", type=int, default=600000)
    parser.add_argument("--guidance", type=float, default=None, help="Default: pictoworld's own.")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--json", type=Path, default=Path("runs/hspace-fair-heldout.json"))
    parser.add_argument("--force", action="store_true", help="Measure settings already in --json again.")
    args = parser.parse_args()

    from diffsteer import pictoworld
    from diffsteer.attributes import get_axis
    from diffsteer.experiments.mitigations import mitigation_steering
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.metrics import mean_deviation_ratio
    from diffsteer.models import load_pipeline, model_fingerprint
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.pictoworld.world import article
    from diffsteer.steering.fair import fair_choice
    from diffsteer.steering.hspace import HSpaceVector
    from diffsteer.steering.library import SteeringLibrary
    from diffsteer.steering.steerer import Steerer

    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]}; choose from {', '.join(SETTINGS)}")
    torch.set_num_threads(1)
    pipe = load_pipeline("pictoworld")
    oracle = load_oracle(pictoworld.oracle_dir())
    guidance = args.guidance if args.guidance is not None else pictoworld.RECOMMENDED_GUIDANCE
    gen = SteeredGenerator(pipe, steps=20, guidance=guidance, batch_size=64)
    fingerprint = model_fingerprint(pipe)
    library = SteeringLibrary([pictoworld.weights_dir() / "steering"])
    classes = {axis: get_axis(axis).classes for axis in AXES}
    seeds = [args.seed + k for k in range(args.n)]
    figures = json.loads(args.json.read_text()) if args.json.is_file() else {}
    expected = {"n": args.n, "seed": args.seed, "guidance": guidance, "steps": 20}
    if figures and figures.get("setup") != expected:
        raise SystemExit(f"{args.json} holds another setup ({figures.get('setup')}); use another --json")
    figures["setup"] = expected
    figures.setdefault("settings", {})

    def requests(setting: str, axis: str, prompt: str) -> tuple[list, dict]:
        plain = [ImageRequest(prompt=prompt, seed=s) for s in seeds]
        if setting == "none":
            return plain, {}
        if setting == "hspace-1":
            files = library.for_axis(axis, classes[axis], HSpaceVector.kind)
            vectors = {c: HSpaceVector.load(p) for c, p in files.items()}
            steered = [vectors[fair_choice(r.seed, classes[axis])].apply(r, 1.0) for r in plain]
            return steered, {"strength": 1.0}
        spec = mitigation_steering(setting, [axis])
        steerer = Steerer(spec, gen, fingerprint=fingerprint, library=library, axis_classes=classes)
        steered = [steerer.steer(r) for r in plain]
        used = sorted({item["strength"] for _, desc in steered for item in desc.get(spec.fair.method, [])})
        return [r for r, _ in steered], {"strength": used}

    for setting in settings:
        if setting in figures["settings"] and not args.force:
            print(f"{setting}: kept from {args.json}")
            continue
        started = time.time()
        row = {}
        for axis, professions in AXES.items():
            counts, share, recognised, used = [], {}, {}, {}
            for prof in professions:
                batch, used = requests(setting, axis, f"a photo of {article(prof)} {prof}")
                labels = predict(oracle, np.stack([np.asarray(r.image) for r in gen.generate(batch)]))
                row_counts = [labels[axis].count(c) for c in classes[axis]]
                counts.append(row_counts)
                share[prof] = round(labels[axis].count(SHARE_OF[axis]) / max(1, sum(row_counts)), 4)
                recognised[prof] = round(float(np.mean([x == prof for x in labels["profession"]])), 4)
            row[axis] = {
                "mean_deviation_ratio": round(float(mean_deviation_ratio(np.array(counts))), 4),
                "share_of": SHARE_OF[axis],
                "share": share,
                "recognised": recognised,
                "recognised_mean": round(float(np.mean(list(recognised.values()))), 4),
                **used,
            }
        row["seconds"] = round(time.time() - started, 1)
        figures["settings"][setting] = row
        dr = {a: (r["mean_deviation_ratio"], r["recognised_mean"]) for a, r in row.items() if a in AXES}
        print(setting, json.dumps(dr), flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
