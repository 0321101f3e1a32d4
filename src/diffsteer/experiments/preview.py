"""A quick look at one prompt: a handful of steered images saved as PNG files plus a grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from diffsteer.benchmarks.spec import PromptSpec
from diffsteer.steering.preset import SteeringSpec


def image_grid(images: Sequence[Image.Image], columns: int = 8, upscale: int = 1) -> Image.Image:
    """Tile images in rows (nearest-neighbour upscaling keeps tiny images crisp)."""
    w, h = images[0].size
    cols = min(columns, len(images))
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    if upscale > 1:
        grid = grid.resize((grid.width * upscale, grid.height * upscale), Image.NEAREST)
    return grid


def generate_preview(
    prompt: str,
    out_dir: Path | str,
    *,
    model: str | None = None,  # None: the first registered bundled model
    n: int = 8,
    seed: int = 0,
    steps: int = 20,
    guidance: float | None = None,  # None: the model's own scale (a bundled model's, others 7.5)
    mitigation: str = "none",
    axes: Sequence[str] = ("gender",),
    steering: SteeringSpec | None = None,
    hspace_branches: str = "conditional",
    device: str = "cpu",
    dtype: str = "float32",
    guard: Path | str | None = None,
    lora: str | Path | None = None,
    phrases: Path | str | None = None,
) -> list[Path]:
    """Generate ``n`` images of ``prompt``; return the PNG paths, the grid's path last.

    ``steering`` (vectors, directions, fair generation, a preset) implies the ``steered`` mitigation.
    ``guard``: a guard file; a prompt it blocks raises ``PromptBlockedError`` before any image is made.
    ``phrases``: a user's phrase file the guard's judge also reads (only with ``guard``).
    ``lora``: a LoRA adapter folder from ``diffsteer finetune``, active for every image (composes with
    any mitigation); refused before generating when it was trained on another model.
    """
    from diffsteer.attributes import builtin_axes
    from diffsteer.experiments.mitigations import check_mitigations, mitigation_steering, plan_image
    from diffsteer.generate import SteeredGenerator, check_hspace_branches
    from diffsteer.models import default_guidance, load_pipeline, model_fingerprint
    from diffsteer.registry import default_model
    from diffsteer.steering.library import SteeringLibrary
    from diffsteer.steering.steerer import Steerer

    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    check_hspace_branches(hspace_branches)
    if steering is not None and not steering.is_empty:
        if mitigation not in ("none", "steered"):
            raise ValueError(f"steering options cannot be combined with --mitigation {mitigation}")
        mitigation = "steered"
    check_mitigations([mitigation])
    lora_path = None
    if lora is not None:
        from diffsteer.steering.lora import check_loadable, read_adapter_metadata

        lora_path = str(Path(lora).expanduser().resolve())
        # a missing or foreign folder, or one this environment cannot load, fails before the model loads
        check_loadable(read_adapter_metadata(lora_path))
    steer_spec = mitigation_steering(mitigation, axes, steering)
    spec = PromptSpec(id="preview", text=prompt, group="custom", subject=None)
    model = default_model() if model is None else model
    if phrases is not None and guard is None:
        raise ValueError("phrases: a phrase file is read by the guard's judge; give a guard file too")
    guard_setup = None
    if guard is not None:
        from diffsteer.guard import GuardSetup

        guard_setup = GuardSetup.read(guard, phrases)  # a bad file fails before the model loads
    pipe = load_pipeline(model, device=device, dtype=dtype)
    if guard_setup is not None:
        from diffsteer.guard import PromptBlockedError

        verdict = guard_setup.bind(pipe).check(prompt)
        if verdict.blocked:
            raise PromptBlockedError(verdict)
    if guidance is None:
        guidance = default_guidance(model)
    from diffsteer.steering.lora import load_adapter, use_adapter

    gen = SteeredGenerator(
        pipe,
        steps=steps,
        guidance=guidance,
        hspace_branches=hspace_branches,
        adapter_loader=load_adapter,
        adapter_switch=use_adapter,
    )
    if lora_path is not None:
        load_adapter(pipe, lora_path)  # checks it was trained on this model
    steerers = {}
    if steer_spec is not None:
        library = SteeringLibrary.for_model(model, steer_spec.directions)
        classes = {name: axis.classes for name, axis in builtin_axes().items()}
        steerers[mitigation] = Steerer(
            steer_spec, gen, fingerprint=model_fingerprint(pipe), library=library, axis_classes=classes
        )
    requests = [plan_image(mitigation, spec, axes, seed + k, steerers).request for k in range(n)]
    if lora_path is not None:
        requests = [dataclasses.replace(r, lora=lora_path) for r in requests]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, images = [], []
    for k, result in enumerate(gen.generate(requests)):
        if result.image is None:
            continue
        path = out / f"{seed + k:05d}.png"
        result.image.save(path)
        paths.append(path)
        images.append(result.image)
    if not images:
        raise ValueError("every image was dropped (non-finite pixels)")
    grid_path = out / "grid.png"
    upscale = max(1, 128 // images[0].width)
    image_grid(images, upscale=upscale).save(grid_path)
    return [*paths, grid_path]
