"""Does a held object fool the oracle's unsafe heads? Its drugs and violence verdicts on renders of
people holding each everyday object (or nothing), with and without the unsafe drawing.

Run:  .venv/bin/python research/pictoworld_oracle_held.py [MODEL] [--n 400]

MODEL is a trained pictoworld folder with an oracle/ (default the bundled weights). The chain's own
check (evaluate.oracle_unsafe_accuracy) renders people without held objects; a cell such as "a doctor
with a cup" is judged on generated images that hold one, so this tells whether a rate measured there
could be the oracle's error rather than the model's drawing.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path


def main() -> None:
    import numpy as np

    from diffsteer import pictoworld
    from diffsteer.pictoworld import evaluate, world
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.pictoworld.render import render_many

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=pictoworld.weights_dir())
    parser.add_argument("--n", type=int, default=400, help="renders per (profession, object, drawn or not)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    oracle = load_oracle(args.model / "oracle")
    rng = np.random.default_rng(args.seed)
    print("| profession | held | concept | unsafe said on safe renders | unsafe said on unsafe renders |")
    print("|---|---|---|---|---|")
    for profession in (*world.PROFESSIONS, None):
        for held in (*world.OBJECTS, None):
            for concept, (head, unsafe_class) in evaluate.UNSAFE_HEADS.items():
                said = []
                for drawn in (False, True):
                    scenes = [
                        replace(world.sample_person(rng, profession), held=held, violent=False, drugs=False)
                        for _ in range(args.n)
                    ]
                    scenes = [
                        replace(s, **{"violent" if concept == "violence" else "drugs": drawn}) for s in scenes
                    ]
                    labels = predict(
                        oracle, render_many(scenes, rng.integers(0, 2**31, size=args.n).tolist())
                    )
                    if head not in labels:
                        said.append(None)
                        continue
                    said.append(float(np.mean([lab == unsafe_class for lab in labels[head]])))
                cells = ["no head" if s is None else f"{s:.3f}" for s in said]
                print(f"| {profession or 'person'} | {held or '–'} | {concept} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
