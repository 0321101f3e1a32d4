"""Learning steering files: concept prompts -> images (through the runner) -> a steering method's fit.

The methods themselves live in :mod:`diffsteer.steering` (how a vector is optimised, how a direction
is fitted, the file formats); this module plans their training images, has the shared runner make
what the work folder's run store lacks, and hands the stored pictures (or recorded latents) to the
method. So an interrupted or repeated learn generates nothing twice, and any executor can make them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.runs.executors import Executor
from diffsteer.runs.executors.local import LocalExecutor
from diffsteer.runs.runner import generate_missing
from diffsteer.runs.store import ImageRecord, RunStore, job_key
from diffsteer.steering.hspace import (
    DEFAULT_IMAGES,
    DEFAULT_STEPS,
    HSpaceVector,
    check_recipe,
    fit_hspace_vector,
    prediction_type,
)

__all__ = ["HSPACE_SEED_STRIDE", "learn_hspace"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# h-space training images use seeds far from the 0..n seeds audits use
HSPACE_SEED_STRIDE = 1_000_000


def learn_hspace(
    pipe: Any,
    *,
    concept: str,
    concept_prompt: str,
    neutral_prompt: str,
    negative_prompt: str = "",
    images: int = DEFAULT_IMAGES,
    steps: int = DEFAULT_STEPS,
    lr: float = 0.1,
    batch_size: int = 8,
    seed: int = 0,
    guidance: float = 7.5,
    inference_steps: int = 20,
    work_dir: Path | str,
    base_model: str,
    axis: str | None = None,
    class_name: str | None = None,
    generate_batch_size: int = 16,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> HSpaceVector:
    """Learn the h-space vector of ``concept`` (the method: :mod:`diffsteer.steering.hspace`).

    ``concept_prompt`` (with ``negative_prompt``) makes the training images, ``neutral_prompt``
    conditions the U-Net while the vector is optimised. Images are stored in ``work_dir`` (a run
    store) and reused by any later learn with the same model and image recipe. ``executor`` makes
    the missing images (default: this process, on ``pipe``). Deterministic given ``seed`` (same device
    and thread count).
    """
    from diffsteer.models import model_fingerprint

    check_recipe(concept, concept_prompt, neutral_prompt, images, steps, lr, batch_size, inference_steps)
    report = progress or (lambda _stage, _done, _total: None)
    started = time.time()
    generator = SteeredGenerator(
        pipe, steps=inference_steps, guidance=guidance, batch_size=generate_batch_size
    )
    fingerprint = model_fingerprint(pipe)
    first_seed = HSPACE_SEED_STRIDE * (seed + 1)
    recipe = {
        "concept_prompt": concept_prompt,
        "neutral_prompt": neutral_prompt,
        "negative_prompt": negative_prompt,
        "images": int(images),
        "steps": int(steps),
        "lr": float(lr),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "guidance": float(guidance),
        "inference_steps": int(inference_steps),
        "image_seeds": f"{first_seed}..{first_seed + images - 1}",
        "scheduler": "DDPM forward process from the pipeline's scheduler config, t uniform",
    }

    executor = executor or LocalExecutor(generator)
    pictures = _hspace_training_images(
        generator, recipe, fingerprint, base_model, Path(work_dir), executor, report
    )
    generated_at = time.time()
    vector, curve, eval_loss = fit_hspace_vector(generator, pictures, recipe, report)
    finished = time.time()

    metadata: dict[str, Any] = {
        "base_model": base_model,
        "fingerprint": fingerprint,
        "block": generator.steered_block,
        "shape": list(generator.hspace_shape),
        "image_size": [generator.height, generator.width],
        "prediction_type": prediction_type(pipe),
        "recipe": recipe,
        "loss_curve": curve,
        "eval_loss": eval_loss,
        "axis": axis,
        "class_name": class_name,
        "seconds": round(finished - started, 2),
        "seconds_images": round(generated_at - started, 2),
        "seconds_optimise": round(finished - generated_at, 2),
    }
    metadata = {k: v for k, v in metadata.items() if v is not None}  # as a saved file reads back
    return HSpaceVector(concept=concept, vector=vector, metadata=metadata)


def _hspace_training_images(
    generator: SteeredGenerator,
    recipe: dict[str, Any],
    fingerprint: str,
    base_model: str,
    work_dir: Path,
    executor: Executor,
    report: Progress,
) -> list[Any]:
    """The N training pictures, generated into (or read back from) the run store in ``work_dir``."""
    from diffsteer.models import weights_fingerprint

    dtype = str(generator.pipe.unet.dtype).replace("torch.", "")
    weights = weights_fingerprint(generator.pipe)  # images of other weights in the store are not reused
    config = {
        "purpose": "hspace training images",
        "model": base_model,
        "fingerprint": fingerprint,
        "size": [generator.height, generator.width],
    }
    first_seed = HSPACE_SEED_STRIDE * (recipe["seed"] + 1)
    jobs: list[tuple[ImageRecord, ImageRequest]] = []
    for k in range(recipe["images"]):
        request = ImageRequest(recipe["concept_prompt"], first_seed + k, recipe["negative_prompt"])
        key = job_key(
            model=fingerprint,
            weights=weights,
            prompt=request.prompt,
            negative=request.negative_prompt,
            seed=request.seed,
            steps=recipe["inference_steps"],
            guidance=recipe["guidance"],
            size=[generator.height, generator.width],
            dtype=dtype,
        )
        record = ImageRecord(
            key=key,
            mitigation="none",
            prompt_id="hspace-concept",
            prompt=request.prompt,
            final_prompt=request.prompt,
            seed=request.seed,
            image_index=k,
            steering={"negative_prompt": request.negative_prompt} if request.negative_prompt else {},
            model=base_model,
            status="ok",
        )
        jobs.append((record, request))

    # resume=True: rows of other recipes stay; only rows whose key matches a job of this one are read
    with RunStore.open(work_dir, config, resume=True) as store:
        generate_missing(store, jobs, executor, progress=report, stage="images")
        wanted = {record.key for record, _ in jobs}
        rows = [r for r in store.images(status="ok") if r.key in wanted]
        rows.sort(key=lambda r: r.image_index)
        pictures = [store.load_image(r) for r in rows]
    if not pictures:
        raise RuntimeError(
            f"every one of the {recipe['images']} training images was unusable (non-finite or black)"
        )
    return pictures
