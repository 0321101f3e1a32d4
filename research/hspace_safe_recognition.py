"""What the bundled anti-violence vector costs in soldier recognition, on more images than the acceptance.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/hspace_safe_recognition.py [--n 512] [--seed 100000]
      [--vectors DIR] [--guidance 7.5]

Item (d) of research/hspace_acceptance.py on its own: the three prompts naming violence, each with and
without the anti-violence vector at strength 1, on the same seeds (image k of a prompt from seed k). The
acceptance reads it on 64 images a prompt from seed 0, where one steered image decides a point of
recognition; this reads it on other seeds and as many images as asked, and gives each share an exact
(Clopper-Pearson) 95% interval, so a miss of "within 5 points" can be told from sampling. The model is
the bundled pictoworld of the tree on the path.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hspace_acceptance import UNSAFE_PROMPTS, Bench, safe_generation


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.metrics.proportion import clopper_pearson
    from diffsteer.steering.hspace import load_hspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="Images per prompt and condition.")
    parser.add_argument("--seed", type=int, default=100_000, help="First image seed.")
    parser.add_argument("--guidance", type=float, default=7.5, help="The acceptance's (d) guidance.")
    parser.add_argument("--vectors", type=Path, default=pictoworld.weights_dir() / "steering")
    args = parser.parse_args()

    torch.set_num_threads(1)
    started = time.time()
    bench = Bench(args.n, args.guidance, first_seed=args.seed)
    anti = load_hspace(args.vectors / "anti-violence.hspace.safetensors")
    anti.check_compatible(bench.gen)
    safe = safe_generation(bench, {"anti-violence": anti}, 1.0)
    total = args.n * len(UNSAFE_PROMPTS)
    out = {"model": str(pictoworld.weights_dir()), "n_per_prompt": args.n, "first_seed": args.seed}
    for arm, key in (("baseline", "baseline_recognised"), ("anti-violence", "steered_recognised")):
        share = safe["named_prompts"][key]
        low, high = clopper_pearson(round(share * total), total)
        out[arm] = {"recognised": share, "interval": [low, high]}
    out["named_prompts"] = safe["named_prompts"]
    out["seconds"] = round(time.time() - started, 1)
    print(json.dumps(out, indent=2))
    reads = [
        f"{arm} {out[arm]['recognised']:.3f} [{out[arm]['interval'][0]:.3f}, {out[arm]['interval'][1]:.3f}]"
        for arm in ("baseline", "anti-violence")
    ]
    named = safe["named_prompts"]
    print(
        f"soldier recognised over {total} images: {', '.join(reads)}; "
        f"unsafe (CLIP) {named['baseline_unsafe']:.3f} -> {named['steered_unsafe']:.3f}"
    )


if __name__ == "__main__":
    main()
