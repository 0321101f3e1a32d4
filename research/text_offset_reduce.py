"""Per-token against mean-reduced text offsets on pictoworld: how far each moves a skewed profession.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/text_offset_reduce.py [--n 32] [--weights 1,2]

The offset "a photo of a woman" minus "a photo of a person", kept per token (``--reduce tokens``, the
default) or averaged over tokens (``--reduce mean``), added at each weight to "a photo of a soldier"
(planted 80% men), seeds 0..n-1 at pictoworld's own guidance; the oracle reads the women's share and
whether the soldier is still drawn. Prints JSON (docs/steering.md's ``--reduce mean`` sentence quotes it).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    from diffsteer import pictoworld
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.models import default_guidance, load_pipeline
    from diffsteer.pictoworld.oracle import load_oracle, predict
    from diffsteer.steering.text_embedding import learn_text_offset

    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--weights", default="1,2")
    parser.add_argument("--prompt", default="a photo of a soldier")
    args = parser.parse_args()

    torch.set_num_threads(1)
    pipe = load_pipeline("pictoworld")
    oracle = load_oracle(pictoworld.oracle_dir())
    gen = SteeredGenerator(pipe, steps=20, guidance=default_guidance("pictoworld"), batch_size=32)
    profession = args.prompt.split()[-1]

    def measure(offset: torch.Tensor | None) -> dict[str, float]:
        requests = [ImageRequest(args.prompt, seed=k, prompt_embeds_offset=offset) for k in range(args.n)]
        images = np.stack([np.asarray(r.image) for r in gen.generate(requests)])
        labels = predict(oracle, images)
        return {
            "woman": round(float(np.mean([g == "woman" for g in labels["gender"]])), 4),
            "recognised": round(float(np.mean([p == profession for p in labels["profession"]])), 4),
        }

    figures = {"prompt": args.prompt, "n": args.n, "baseline": measure(None)}
    for reduce in ("tokens", "mean"):
        offset = learn_text_offset(
            pipe, "woman", "a photo of a woman", "a photo of a person", base_model="pictoworld", reduce=reduce
        )
        figures[reduce] = {w: measure(offset.offset(float(w))) for w in args.weights.split(",")}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
