"""Look at one prompt on a pictoworld model across guidance scales: the oracle's shares and a grid to view.

Run:  .venv/bin/python research/prompt_probe.py "a photo of a dark-skinned pilot" \
          [--model DIR] [--n 32] [--seed 5000] [--guidance 1,3,7.5] [--rescale 0] [--grid-dir runs/probe]

DIR is a folder with pipeline/ and oracle/ (a retrained candidate's OUT); default: the bundled weights.
Per (guidance, guidance_rescale) it prints the share of images the oracle gives each gender and skin
tone, the profession recognised, a row of letters per image, and writes an 8-wide grid upscaled 4x.
Made to find why an explicit prompt fails at one guidance (RESULTS.md, "pictoworld v7 candidate").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import research_common as rc
import torch

from diffsteer import pictoworld
from diffsteer.pictoworld.oracle import load_oracle, predict


def _grid(images: np.ndarray, path: Path, width: int = 8) -> None:
    from PIL import Image

    rows = [images[i : i + width] for i in range(0, len(images), width)]
    pad = np.zeros_like(images[0])
    rows = [np.concatenate(list(r) + [pad] * (width - len(r)), axis=1) for r in rows]
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--model", type=Path, default=None, help="folder with pipeline/ and oracle/")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--seed", type=int, default=5000)
    parser.add_argument("--guidance", type=rc.scale_list, default="1,3,7.5")
    parser.add_argument(
        "--rescale", type=rc.scale_list, default="0", help="diffusers' guidance_rescale values"
    )
    parser.add_argument("--grid-dir", type=Path, default=Path("runs/probe"))
    args = parser.parse_args()
    from diffusers import StableDiffusionPipeline

    pipe_dir = args.model / "pipeline" if args.model else pictoworld.pipeline_dir()
    oracle_dir = args.model / "oracle" if args.model else pictoworld.oracle_dir()
    for folder in (pipe_dir, oracle_dir):
        if not folder.is_dir():
            parser.error(f"no such folder: {folder}")
    pipe = StableDiffusionPipeline.from_pretrained(pipe_dir, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    oracle = load_oracle(oracle_dir)
    args.grid_dir.mkdir(parents=True, exist_ok=True)
    for guidance in args.guidance:
        for rescale in args.rescale:
            gens = [torch.Generator().manual_seed(args.seed + k) for k in range(args.n)]
            out = pipe(
                [args.prompt] * args.n,
                num_inference_steps=20,
                guidance_scale=guidance,
                guidance_rescale=rescale,
                generator=gens,
                output_type="np",
            ).images
            images = (out * 255).round().astype(np.uint8)
            labels = predict(oracle, images)
            shares = {
                head: {v: float(np.mean([x == v for x in labels[head]])) for v in sorted(set(labels[head]))}
                for head in ("gender", "skin_tone", "profession")
            }
            path = args.grid_dir / f"g{guidance}_r{rescale}.png"
            _grid(images, path)
            print(f"guidance {guidance}, rescale {rescale}: {shares}")
            letters = {"dark": "D", "light": "L"}  # anything else ("uncertain") prints as ?
            print("  skin per image:", "".join(letters.get(s, "?") for s in labels["skin_tone"]))
            print(f"  grid: {path}")


if __name__ == "__main__":
    main()
