"""A fake audit that writes noise images into a run store one at a time, resuming like the real CLI.

The SIGKILL tests in test_store.py run this as a subprocess, kill it mid-way and run it again.
Prints ``generated N`` at the end: how many jobs this invocation produced. ``--random-pixels`` mimics
non-deterministic GPU kernels (a rerun makes different PNGs); ``--kill-after-png N`` makes the process
SIGKILL itself right after its N-th PNG file is on disk, before that job's row is committed.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image

from diffsteer.runs.store import ImageRecord, RunStore, job_key

MODEL = "noise-v1"
MITIGATIONS = ("none", "fair-prompt")
PROMPTS = {
    "doctor": "a photo of a doctor",
    "nurse": "a photo of a nurse",
    "pilot": "a photo of a pilot",
    "chef": "a photo of a chef",
}
IMAGES_PER_PROMPT = 5
SIZE = 96
CONFIG = {
    "model": MODEL,
    "mitigations": list(MITIGATIONS),
    "images_per_prompt": IMAGES_PER_PROMPT,
    "size": SIZE,
}


def plan() -> list[ImageRecord]:
    """Every job of the audit (2 mitigations x 4 prompts x 5 images = 40), with its own seed."""
    jobs = []
    for mitigation in MITIGATIONS:
        for prompt_id, prompt in PROMPTS.items():
            for index in range(IMAGES_PER_PROMPT):
                seed = 1000 + index
                final = prompt if mitigation == "none" else f"{prompt}, of any gender"
                steering = {"method": mitigation}
                key = job_key(model=MODEL, prompt=final, steering=steering, seed=seed, size=SIZE)
                jobs.append(
                    ImageRecord(
                        key=key,
                        mitigation=mitigation,
                        prompt_id=prompt_id,
                        prompt=prompt,
                        final_prompt=final,
                        seed=seed,
                        image_index=index,
                        steering=steering,
                        model=MODEL,
                        status="ok",
                    )
                )
    return jobs


def render(record: ImageRecord, *, random_pixels: bool = False) -> Image.Image:
    """Noise that depends only on the job (unless ``random_pixels``), so a rerun makes the same PNG."""
    rng = np.random.default_rng(None if random_pixels else int(record.key[:16], 16))
    return Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def die_after_png(n: int) -> None:
    """Patch the store so the process is SIGKILLed just after its n-th PNG write."""
    original = RunStore._write_png
    written = 0

    def write_png(self: RunStore, name: str, data: bytes) -> bool:
        nonlocal written
        result = original(self, name, data)
        written += 1
        if written >= n:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    RunStore._write_png = write_png  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--random-pixels", action="store_true")
    parser.add_argument("--kill-after-png", type=int, default=0)
    args = parser.parse_args()
    if args.kill_after_png:
        die_after_png(args.kill_after_png)
    made = 0
    with RunStore.open(args.run_dir, CONFIG) as store:
        done = store.done_keys()
        for record in plan():
            if record.key in done:
                continue
            store.add_images([(record, render(record, random_pixels=args.random_pixels))])
            made += 1
            time.sleep(args.sleep)
    print(f"generated {made}", flush=True)


if __name__ == "__main__":
    main()
