"""Re-create the h-space concept vectors bundled with pictoworld (src/diffsteer/pictoworld/weights/steering).

Run:  OMP_NUM_THREADS=1 .venv/bin/python tools/learn_pictoworld_vectors.py [--only woman,man]
      [--out DIR] [--work-dir runs/learn-hspace]

Each vector is exactly what ``diffsteer learn hspace`` makes with the options below (the library
defaults: 256 training images, 300 Adam steps, lr 0.1, batch 8, seed 0, training images at guidance
7.5 with 20 steps). Prompts use the explicit phrasings pictoworld's captions were trained on
(diffsteer/pictoworld/world.py): "a photo of a man", "a photo of a light-skinned person", and the
violent caption "a photo of a soldier with a weapon and blood".

The anti-concept follows the method: its training images come from the neutral prompt with the
unsafe concept in the negative prompt, and it is learned under the same neutral prompt, so the
vector holds what "not violent" adds to a soldier. Violence only occurs on soldiers in the world.
Its training images are made at guidance 3, not 7.5: at 7.5 the negative prompt pushes away what the
violent prompt shares with the neutral one, the soldier himself, and the vector learned to remove the
soldier with the weapon (measured on the v4 candidate, benchmarks/RESULTS.md; docs/steering.md,
"pictoworld's vectors").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PERSON = "a photo of a person"
SOLDIER = "a photo of a soldier"
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
}


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.experiments.learn import learn_hspace
    from diffsteer.models import load_pipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(RECIPES), help="Comma list of concepts to learn.")
    parser.add_argument("--out", type=Path, default=pictoworld.weights_dir() / "steering")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/learn-hspace"))
    args = parser.parse_args()

    torch.set_num_threads(1)  # deterministic across machines with different core counts
    pipe = load_pipeline("pictoworld")
    timings = {}
    for concept in [c.strip() for c in args.only.split(",") if c.strip()]:
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


if __name__ == "__main__":
    main()
