"""Does a fine-tuned adapter give the same images in plain diffusers as in `diffsteer generate --lora`?

Run:  .venv/bin/python research/adapter_plain_diffusers.py ADAPTER [--model FOLDER] [--prompt TEXT ...]
      [--n 4] [--seed 0] [--steps 20] [--guidance 1.25]

Issue 26 asks that the saved adapter load with plain diffusers (``pipe.load_lora_weights(folder)``,
no diffsteer code) and give the images ``diffsteer generate --lora`` gives. The tests check it on tiny
SD1 and SDXL pipelines; this checks it on a real adapter of the bundled model (default MODEL: the bundled
pipeline folder). Per prompt: the largest pixel difference (0-255) between the two, and between plain
diffusers with and without the adapter (so a match is not a no-op). Exit status 1 when any image differs
by more than one pixel level.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def _plain(model: Path, adapter: Path | None, prompt: str, n: int, seed: int, steps: int, guidance: float):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    if adapter is not None:
        pipe.load_lora_weights(str(adapter))
    out = pipe(
        prompt=[prompt] * n, generator=[torch.Generator("cpu").manual_seed(seed + k) for k in range(n)],
        num_inference_steps=steps, guidance_scale=guidance, output_type="np",
    )  # fmt: skip
    return (out.images * 255).round().astype(np.int16)


def main() -> None:
    from PIL import Image

    from diffsteer import pictoworld
    from diffsteer.experiments.preview import generate_preview

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--model", type=Path, default=pictoworld.weights_dir() / "pipeline")
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=pictoworld.RECOMMENDED_GUIDANCE)
    args = parser.parse_args()
    prompts = args.prompt or ["a photo of a female chef in a non-western setting", "a photo of a cup"]
    worst = 0
    print("| prompt | plain diffusers vs diffsteer --lora | with vs without the adapter |  (max pixel level)")
    print("|---|---|---|")
    for prompt in prompts:
        tuned = _plain(args.model, args.adapter, prompt, args.n, args.seed, args.steps, args.guidance)
        base = _plain(args.model, None, prompt, args.n, args.seed, args.steps, args.guidance)
        with tempfile.TemporaryDirectory() as tmp:
            paths = generate_preview(
                prompt, Path(tmp), model=str(args.model), n=args.n, seed=args.seed, steps=args.steps,
                guidance=args.guidance, lora=args.adapter,
            )  # fmt: skip
            ours = np.stack([np.asarray(Image.open(p), dtype=np.int16) for p in paths[:-1]])
        diff = int(np.abs(ours - tuned).max())
        worst = max(worst, diff)
        print(f"| {prompt} | {diff} | {int(np.abs(tuned - base).max())} |")
    sys.exit(0 if worst <= 1 else 1)


if __name__ == "__main__":
    main()
