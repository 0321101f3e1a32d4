"""Re-create the initial-noise directions bundled with pictoworld (src/diffsteer/pictoworld/weights/steering).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learn_pictoworld_directions.py
      [--out DIR] [--work-dir runs/learn-noise-pictoworld]

Two steps, both public functions:

1. ``learn_noise_directions`` per axis, exactly what ``diffsteer learn noise`` does with
   ``--classes woman="a photo of a woman" --classes man="a photo of a man" --axis gender --images 256``
   (and light/dark with "a photo of a light-skinned person" / "a photo of a dark-skinned person"):
   256 images per class, seeds 0..255, 20 steps, guidance 7.5 (weights swept at pictoworld's own
   guidance), latents recorded at steps 0, 5, 10, 15,
   linear SVM with C = 0.001 on a 60/40 split by seed, the earliest step with held-out accuracy >= 0.9.
2. The recommended weight is measured, not assumed: a strength sweep per class (``run_sweep``,
   weights 0..12, 32 images, seeds 0..31, pictoworld's CLIP classifier) on a profession the model
   skews against that class; ``recommend_weight`` gives the smallest weight at which the class
   reaches half of the images. Both classes of an axis get the larger of their two weights (the
   method applies +w*d and -w*d with one w). The sweeps are kept under ``--sweep-dir``.
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
# the prompt each class's weight is measured on: a profession the bundled model skews against it
SWEEP_PROMPTS = {
    "woman": "a photo of a doctor",
    "man": "a photo of a nurse",
    "light": "a photo of a hairdresser",
    "dark": "a photo of a pilot",
}
SWEEP_WEIGHTS = [0, 2, 4, 6, 8, 10, 12]
IMAGES_PER_CLASS = 256
SVM_C = 0.001


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.models import load_pipeline
    from diffsteer.steering.noise import learn_noise_directions, norm_fraction
    from diffsteer.steering.sweep import recommend_weight, run_sweep

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=pictoworld.weights_dir() / "steering")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/learn-noise-pictoworld"))
    parser.add_argument("--sweep-dir", type=Path, default=Path("runs/noise-weight-sweeps"))
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
        found, sweeps = {}, {}
        for d in directions:
            sweeps[d.concept] = run_sweep(
                SWEEP_PROMPTS[d.concept],
                [d],
                SWEEP_WEIGHTS,
                out_dir=args.sweep_dir / d.concept,
                model="pictoworld",
                pipe=pipe,
                n=32,
                seed=0,
                axis=axis,
                batch_size=32,
            ).data
            found[d.concept] = recommend_weight(sweeps[d.concept], d.concept)
        # one weight per axis, as in the method (+w*d for one class, -w*d for the other): the larger
        # of the two classes' weights, so that both reach half of the images on their sweep prompt
        reached = [w for w in found.values() if w is not None]
        weight = float(max(SWEEP_WEIGHTS)) if len(reached) < len(found) else max(reached)
        for d in directions:
            sweep = sweeps[d.concept]
            d.metadata["weight_rule"] = (
                "one weight per axis: the larger of the classes' smallest swept weights at which the class "
                "reaches 50% of the images (CLIP, 32 images) on a profession skewed against it"
                + ("" if len(reached) == len(found) else "; not reached, so the largest swept weight")
            )
            d.metadata["recommended_weight"] = weight
            d.metadata["norm_fraction"] = round(norm_fraction(weight, d.latent_shape), 5)
            d.metadata["weight_sweep"] = {
                "prompt": SWEEP_PROMPTS[d.concept],
                "weights": sweep["weights"],
                "share": sweep["shares"][d.concept],
                "clip_score": sweep["clip_score"],
                "class_weight": found[d.concept],
            }
            path = d.save(args.out)
            record[d.concept] = {
                "file": str(path),
                "heldout_accuracy": d.metadata["heldout_accuracy"],
                "step": d.metadata["step"],
                "class_weight": found[d.concept],
                "recommended_weight": weight,
                "sweep_share": sweep["shares"][d.concept],
                "seconds": round(time.time() - started, 1),
            }
            print(json.dumps({d.concept: record[d.concept]}), flush=True)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
