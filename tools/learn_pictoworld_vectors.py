"""Re-create the h-space concept vectors bundled with pictoworld (src/diffsteer/pictoworld/weights/steering).

Run:  OMP_NUM_THREADS=1 .venv/bin/python tools/learn_pictoworld_vectors.py [--only woman,man]
      [--out DIR] [--work-dir runs/learn-hspace] [--sweep-dir runs/hspace-strength-calibration]
      [--calibrate-only]

Each vector is exactly what ``diffsteer learn hspace`` makes with the options below (the library
defaults: 256 training images, 300 Adam steps, lr 0.1, batch 8, seed 0, training images at guidance
7.5 with 20 steps). Prompts use the explicit phrasings pictoworld's captions were trained on
(diffsteer/pictoworld/world.py): "a photo of a man", "a photo of a light-skinned person", and the
violent caption "a photo of a soldier with a weapon and blood".

The anti-concept follows the method: its training images come from the neutral prompt with the
unsafe concept in the negative prompt, and it is learned under the same neutral prompt, so the
vector holds what "not violent" adds to a soldier, learned on the soldier, the profession planted with
the most violence (world v9 also plants it on chefs and on lawyers in a non-western setting);
``anti-drugs`` likewise on the doctor, planted with drugs. The v8 bundled weights predate drugs: learn
``anti-drugs`` only on a v9 model (tools/retrain_pictoworld.sh does).
Its training images are made at guidance 3, not 7.5: at 7.5 the negative prompt pushes away what the
violent prompt shares with the neutral one, the soldier himself, and the vector learned to remove the
soldier with the weapon (measured on the v4 candidate, benchmarks/RESULTS.md; docs/steering.md,
"pictoworld's vectors").

The default strength of the axis vectors (man, woman, light, dark) is measured, not assumed, by the
rule that sets the noise directions' weights (``calibrate_fair_strength``, the fair-mixture rule of
``diffsteer.experiments.calibrate``; see learn_pictoworld_directions.py): both classes' vectors swept
over strengths 0.25..3 (``HSpaceVector.calibration_strengths``; 32 images, seeds 0..31, pictoworld's
CLIP classifier, pictoworld's own guidance) on the same two skewed professions per axis, keeping the
smallest strength at which the fair mixture is within 0.1 of 50% on both; it is stored in the files'
metadata (``recommended_weight``, ``weight_calibration``). ``--calibrate-only`` re-measures it for
the files already in ``--out`` without learning them again (the vectors stay as they are). The
anti-concept has no axis and keeps strength 1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PERSON = "a photo of a person"
SOLDIER = "a photo of a soldier"
DOCTOR = "a photo of a doctor"
RECIPES: dict[str, dict] = {
    "man": {"concept_prompt": "a photo of a man", "neutral_prompt": PERSON, "axis": "gender"},
    "woman": {"concept_prompt": "a photo of a woman", "neutral_prompt": PERSON, "axis": "gender"},
    "light": {
        "concept_prompt": "a photo of a light-skinned person",
        "neutral_prompt": PERSON,
        "axis": "skin_tone",
    },
    "dark": {
        "concept_prompt": "a photo of a dark-skinned person",
        "neutral_prompt": PERSON,
        "axis": "skin_tone",
    },
    "anti-violence": {
        "concept_prompt": SOLDIER,
        "neutral_prompt": SOLDIER,
        "negative_prompt": "a photo of a soldier with a weapon and blood",
        "guidance": 3.0,
        "images": 1000,  # the paper's image and step counts
        "steps": 2500,
    },
    # world v9: the doctor is the profession planted with drugs (20% under the neutral caption)
    "anti-drugs": {
        "concept_prompt": DOCTOR,
        "neutral_prompt": DOCTOR,
        "negative_prompt": "a photo of a doctor with drugs",
        "guidance": 3.0,
        "images": 1000,
        "steps": 2500,
    },
}
# the prompts each axis's strength is measured on: the noise directions' (a skewed profession per class)
CALIBRATION_PROMPTS = {
    "gender": ["a photo of a doctor", "a photo of a nurse"],
    "skin_tone": ["a photo of a hairdresser", "a photo of a pilot"],
}


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.experiments.learn import learn_hspace
    from diffsteer.models import load_pipeline
    from diffsteer.steering.hspace import load_hspace

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(RECIPES), help="Comma list of concepts to learn.")
    parser.add_argument("--out", type=Path, default=pictoworld.weights_dir() / "steering")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/learn-hspace"))
    parser.add_argument("--sweep-dir", type=Path, default=Path("runs/hspace-strength-calibration"))
    parser.add_argument(
        "--calibrate-only",
        action="store_true",
        help="Only measure the axes' strengths of the files in --out.",
    )
    args = parser.parse_args()

    torch.set_num_threads(1)  # deterministic across machines with different core counts
    pipe = load_pipeline("pictoworld")
    timings = {}
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    for concept in [] if args.calibrate_only else only:
        recipe = dict(RECIPES[concept])
        axis = recipe.pop("axis", None)
        started = time.time()
        vector = learn_hspace(
            pipe,
            concept=concept,
            work_dir=args.work_dir / concept,
            base_model="pictoworld",
            axis=axis,
            class_name=concept if axis else None,
            **recipe,
        )
        path = vector.save(args.out)
        meta = vector.metadata
        timings[concept] = {
            "seconds": round(time.time() - started, 1),
            "seconds_images": meta["seconds_images"],
            "seconds_optimise": meta["seconds_optimise"],
            "eval_loss": meta["eval_loss"],
            "vector_norm": round(float(vector.vector.norm()), 2),
        }
        print(f"{path}: {json.dumps(timings[concept])}", flush=True)
    print(json.dumps(timings, indent=2))
    calibrate(pipe, args.out, args.sweep_dir, [c for c in only if RECIPES[c].get("axis")], load_hspace)


def calibrate(pipe, folder: Path, sweep_dir: Path, concepts: list[str], load) -> None:
    """Measure and store the default strength of each axis whose vectors are all in ``folder``."""
    from diffsteer.experiments.calibrate import calibrate_fair_strength

    axes: dict[str, list[str]] = {}
    for concept, recipe in RECIPES.items():
        if recipe.get("axis"):
            axes.setdefault(recipe["axis"], []).append(concept)
    for axis, classes in axes.items():
        if not set(classes) & set(concepts):
            continue
        vectors = [load(folder / f"{c}.hspace.safetensors") for c in classes]
        started = time.time()
        record = calibrate_fair_strength(
            vectors,
            CALIBRATION_PROMPTS[axis],
            out_dir=sweep_dir / axis,
            model="pictoworld",
            pipe=pipe,
            n=32,
            seed=0,
            batch_size=32,
        )
        for v in vectors:
            v.save(folder)
        summary = {
            "axis": axis,
            "recommended_strength": record["recommended_weight"],
            "reached": record["reached"],
            "fair_strength_per_prompt": {p["prompt"]: p["fair_weight"] for p in record["prompts"]},
            "seconds": round(time.time() - started, 1),
        }
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
