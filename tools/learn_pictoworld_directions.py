"""Re-create the initial-noise directions bundled with pictoworld (src/diffsteer/pictoworld/weights/steering).

Run:  OMP_NUM_THREADS=1 .venv/bin/python tools/learn_pictoworld_directions.py
      [--out DIR] [--work-dir runs/learn-noise-pictoworld]

Two steps, both public functions:

1. ``learn_noise_directions`` per axis, exactly what ``diffsteer learn noise`` does with
   ``--classes woman="a photo of a woman" --classes man="a photo of a man" --axis gender --images 256``
   (and light/dark with "a photo of a light-skinned person" / "a photo of a dark-skinned person"):
   256 images per class, seeds 0..255, 20 steps, guidance 7.5 (weights swept at pictoworld's own
   guidance), latents recorded at steps 0, 5, 10, 15,
   linear SVM with C = 0.001 on a 60/40 split by seed, the earliest step with held-out accuracy >= 0.9.
2. The recommended weight is measured, not assumed: ``calibrate_noise_weight`` (the fair-mixture rule
   of ``diffsteer.experiments.calibrate``) sweeps both classes' directions over weights 1..8, 10, 12
   (32 images, seeds 0..31, pictoworld's CLIP classifier, pictoworld's own guidance) on two
   professions the model skews, one against each class, and keeps the smallest weight at which the
   fair mixture (half the images pushed toward each class) is within 0.1 of 50% on both. The sweeps
   and ``calibration.json`` / ``calibration.png`` are kept under ``--sweep-dir/<axis>``.

Until 2026-12-01 the weight was the smallest one at which a class alone reached half of the images
on its sweep prompt; on skin tone that fell one point short of issue 5's 50% target, which is what
prompted the fair-mixture rule (written down, with its tolerance, before it was run).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

AXES = {
    "gender": {"woman": "a photo of a woman", "man": "a photo of a man"},
    "skin_tone": {"light": "a photo of a light-skinned person", "dark": "a photo of a dark-skinned person"},
}
# the prompts each axis's weight is measured on: professions the bundled model skews, one against each class
CALIBRATION_PROMPTS = {
    "gender": ["a photo of a doctor", "a photo of a nurse"],
    "skin_tone": ["a photo of a hairdresser", "a photo of a pilot"],
}
IMAGES_PER_CLASS = 256
SVM_C = 0.001


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.experiments.calibrate import calibrate_noise_weight
    from diffsteer.experiments.learn import learn_noise_directions
    from diffsteer.models import load_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=pictoworld.weights_dir() / "steering")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/learn-noise-pictoworld"))
    parser.add_argument("--sweep-dir", type=Path, default=Path("runs/noise-weight-calibration"))
    args = parser.parse_args()

    torch.set_num_threads(1)  # deterministic across machines with different core counts
    pipe = load_pipeline("pictoworld")
    record = {}
    for axis, classes in AXES.items():
        started = time.time()
        directions = learn_noise_directions(
            pipe,
            classes,
            images_per_class=IMAGES_PER_CLASS,
            record_steps=(0, 5, 10, 15),
            steps=20,
            guidance=7.5,  # class images: high guidance, so their labels (the prompts) hold
            seed=0,
            work_dir=args.work_dir / axis,
            base_model="pictoworld",
            axis=axis,
            svm_c=SVM_C,
            batch_size=32,
        )
        calibration = calibrate_noise_weight(
            directions,
            CALIBRATION_PROMPTS[axis],
            out_dir=args.sweep_dir / axis,
            model="pictoworld",
            pipe=pipe,
            n=32,
            seed=0,
            batch_size=32,
        )
        for d in directions:
            path = d.save(args.out)
            record[d.concept] = {
                "file": str(path),
                "heldout_accuracy": d.metadata["heldout_accuracy"],
                "step": d.metadata["step"],
                "recommended_weight": d.recommended_weight,
                "fair_weight_per_prompt": {p["prompt"]: p["fair_weight"] for p in calibration["prompts"]},
                "seconds": round(time.time() - started, 1),
            }
            print(json.dumps({d.concept: record[d.concept]}), flush=True)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
