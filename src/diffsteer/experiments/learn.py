"""Learning steering files: concept prompts -> images (through the runner) -> a steering method's fit.

The methods themselves live in :mod:`diffsteer.steering` (how a vector is optimised, how a direction
is fitted, the file formats); this module plans their training images, has the shared runner make
what the work folder's run store lacks, and hands the stored pictures (or recorded latents) to the
method. So an interrupted or repeated learn generates nothing twice, and any executor can make them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

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
from diffsteer.steering.noise import (
    DEFAULT_RECORD_STEPS,
    DEFAULT_SVM_C,
    DEFAULT_WEIGHT,
    NoiseDirection,
    check_classes,
    fit_noise_directions,
)

__all__ = ["HSPACE_SEED_STRIDE", "learn_hspace", "learn_noise_directions"]

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


def learn_noise_directions(
    pipe: Any,
    classes: Mapping[str, str],
    *,
    images_per_class: int = 64,
    record_steps: Sequence[int] = DEFAULT_RECORD_STEPS,
    steps: int = 20,
    guidance: float = 7.5,
    seed: int = 0,
    work_dir: Path | str,
    base_model: str,
    axis: str | None = None,
    progress: Progress | None = None,
    batch_size: int = 16,
    svm_c: float = DEFAULT_SVM_C,
    recommended_weight: float = DEFAULT_WEIGHT,
    force: bool = False,
    executor: Executor | None = None,
) -> list[NoiseDirection]:
    """Learn one initial-noise direction per class (the method: :mod:`diffsteer.steering.noise`).

    Image ``k`` of every class starts from seed ``seed + k``. Images go into a RunStore in
    ``work_dir`` and their recorded latents into ``work_dir/latents/``, so an interrupted run resumes
    without generating anything twice. ``executor`` makes the missing images (default: this process,
    on ``pipe``). Two classes give ``+d`` for the first and ``-d`` for the second; more give
    one-vs-rest directions. Returns the directions in ``classes`` order (not saved).
    """
    from diffsteer.models import model_fingerprint, weights_fingerprint

    t0 = time.time()
    classes = check_classes(classes)
    if images_per_class < 3:
        raise ValueError(
            f"images_per_class must be at least 3 (train and test need images), got {images_per_class}"
        )
    if not record_steps:
        raise ValueError("record_steps is empty")
    record = sorted({int(s) for s in record_steps})
    bad = [s for s in record if not 0 <= s < steps]
    if bad:
        raise ValueError(f"record step {bad[0]} out of range: with steps={steps} steps are 0..{steps - 1}")
    generator = SteeredGenerator(pipe, steps=steps, guidance=guidance, batch_size=batch_size)
    fingerprint = model_fingerprint(pipe)
    weights = weights_fingerprint(pipe)
    work_dir = Path(work_dir)
    shape = list(generator.latent_shape)
    # images_per_class is left out of the config on purpose: asking for more images later adds jobs
    config = {
        "kind": "learn-noise",
        "base_model": base_model,
        "fingerprint": fingerprint,
        "weights": weights,
        "classes": classes,
        "record_steps": record,
        "steps": steps,
        "guidance": guidance,
        "latent_shape": shape,
    }
    jobs: list[tuple[ImageRecord, ImageRequest]] = []
    for name, prompt in classes.items():
        for k in range(images_per_class):
            key = job_key(fingerprint=fingerprint, weights=weights, prompt=prompt, seed=seed + k, steps=steps,
                          guidance=guidance, record=record, shape=shape)  # fmt: skip
            row = ImageRecord(
                key=key, mitigation="learn", prompt_id=name, prompt=prompt, final_prompt=prompt,
                seed=seed + k, image_index=k, steering={"kind": "none"}, model=base_model, status="ok",
            )  # fmt: skip
            jobs.append((row, ImageRequest(prompt=prompt, seed=seed + k)))

    def save_latents_first(row: ImageRecord, out: Any) -> None:
        _save_latents(_latents_path(work_dir, row.key), out.latents)

    with RunStore.open(work_dir, config, force=force, resumable=False) as store:
        generate_missing(
            store,
            jobs,
            executor or LocalExecutor(generator),
            progress=progress,
            record_steps=record,
            is_done=lambda row: _latents_path(work_dir, row.key).is_file(),
            on_generated=save_latents_first,
        )
        dropped = {r.key for r in store.images(status="dropped")}

    # features per step come from the saved latents (the only source, fresh or resumed)
    rows: list[tuple[str, int, dict[int, torch.Tensor]]] = []
    for row, _ in jobs:
        if row.key in dropped:
            continue  # an unusable image says nothing about its class
        latents = _load_latents(_latents_path(work_dir, row.key), record)
        if latents is None:
            raise RuntimeError(
                f"latents of {row.prompt_id} image {row.image_index} are missing in {work_dir}; "
                "rerun with force"
            )
        rows.append((row.prompt_id, row.seed, latents))
    return fit_noise_directions(
        rows,
        classes,
        record,
        shape=shape,
        seed=seed,
        base_model=base_model,
        fingerprint=fingerprint,
        axis=axis,
        recipe={"images_per_class": images_per_class, "steps": steps, "guidance": guidance},
        svm_c=svm_c,
        recommended_weight=recommended_weight,
        seconds=round(time.time() - t0, 1),
        progress=progress,
    )


def _latents_path(work_dir: Path, key: str) -> Path:
    return work_dir / "latents" / f"{key}.safetensors"


def _save_latents(path: Path, latents: Mapping[int, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({f"step_{s}": t.contiguous() for s, t in latents.items()}, str(tmp))
    tmp.replace(path)  # written before the store row, so a stored image always has its latents


def _load_latents(path: Path, steps: Sequence[int]) -> dict[int, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError):
        return None
    if any(f"step_{s}" not in tensors for s in steps):
        return None
    return {s: tensors[f"step_{s}"] for s in steps}
