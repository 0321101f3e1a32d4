"""Strength sweep: the same seeds at several strengths of a steering, with shares and quality per strength.

Works for every steering kind (h-space vector, noise direction, text offset) through the
:class:`~diffsteer.steering.method.SteeringMethod` interface; the sweep calls a strength a weight.
A steering's weight trades fairness against fidelity, and the trade-off differs between models, so
it is measured, not assumed: every weight generates images ``seed .. seed+n-1`` of one prompt (the
same initial noise at every weight, so a change is the steering's doing), a CLIP zero-shot classifier
labels them on the axis, and quality is recorded next to the shares: the mean CLIP score of the
images against the prompt, and the Fréchet distance of their CLIP image features to the weight-0
set (0 at weight 0 by definition; larger means further from the unsteered images). Several steerings
are applied together (their effects add) at the same weight.

Outputs in the run folder: ``sweep.json`` (read by the HTML report), ``sweep.png``, and the images and
labels in a resumable run store (``results.sqlite``, ``images/``), so a rerun with more weights only
generates the new ones.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffsteer.steering.kinds import load_method
from diffsteer.steering.method import SteeringMethod

SWEEP_JSON = "sweep.json"
SWEEP_PNG = "sweep.png"
Progress = Callable[[str, int, int], None]


@dataclass
class SweepResult:
    run_dir: Path
    data: dict[str, Any]
    json_path: Path
    plot_path: Path


def parse_weights(text: str | Sequence[float]) -> list[float]:
    """``"0,1,2,4"`` (or numbers) -> sorted distinct finite weights; 0 is always included (the reference)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    weights = []
    for item in items:
        if isinstance(item, str) and not item.strip():
            continue
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ValueError(f"weight '{str(item).strip()}' is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"weight {item} is not finite")
        weights.append(value)
    if not weights:
        raise ValueError("no weights given; e.g. --weights 0,1,2,4,8")
    return sorted(set(weights) | {0.0})


def weight_reaching_share(data: dict[str, Any], cls: str, share: float = 0.5) -> float | None:
    """The smallest positive swept weight at which ``cls`` reaches ``share`` of the counted images.

    Not the weight for fair generation: that one balances the mixture of images pushed toward every
    class (:func:`diffsteer.experiments.calibrate.calibrate_fair_strength`), and is larger.
    """
    for weight, value, n in zip(data["weights"], data["shares"][cls], data["n"], strict=True):
        if weight > 0 and n > 0 and value >= share:
            return float(weight)
    return None


def _all(keys: dict[float, list[str]]) -> list[str]:
    return [k for per_weight in keys.values() for k in per_weight]


def run_sweep(
    prompt: str,
    directions: Sequence[str | Path | SteeringMethod],
    weights: Sequence[float] | str,
    *,
    out_dir: Path | str,
    model: str | None = None,
    pipe: Any = None,
    n: int = 32,
    seed: int = 0,
    axis: str | None = None,
    classifier: Any = None,
    steps: int = 20,
    guidance: float | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    force: bool = False,
    executor: Any = None,
    progress: Progress | None = None,
) -> SweepResult:
    """Generate ``n`` images of ``prompt`` at each weight of the steerings together; write sweep.json/png.

    ``directions`` are steering files (paths) or loaded methods of any kind. ``model`` defaults to the
    first registered bundled model; ``pipe`` reuses a loaded pipeline (``model`` is then only its
    name); ``classifier`` is a
    :class:`~diffsteer.attributes.ClipZeroShotClassifier` or a checkpoint reference (default: the
    model's own if a bundled model registered one, ViT-B/32 otherwise); ``axis`` defaults to the
    directions' axis; ``guidance`` to the model's own scale. ``executor`` makes the missing images
    (default: this process; see :mod:`diffsteer.runs.executors`).
    """
    from PIL import Image

    from diffsteer.attributes import ClipZeroShotClassifier, get_axis
    from diffsteer.generate import ImageRequest, SteeredGenerator
    from diffsteer.metrics.quality import frechet_distance
    from diffsteer.models import (
        default_classifier,
        default_guidance,
        load_pipeline,
        model_fingerprint,
        weights_fingerprint,
    )
    from diffsteer.registry import default_model
    from diffsteer.runs.executors.local import LocalExecutor
    from diffsteer.runs.runner import generate_missing, label_missing
    from diffsteer.runs.store import ImageRecord, RunStore, job_key

    t0 = time.time()
    if not prompt.strip():
        raise ValueError("empty prompt")
    if n < 2:
        raise ValueError(f"a sweep needs n >= 2 images per weight (for the Fréchet distance), got {n}")
    grid = parse_weights(weights)
    loaded = [load_method(d) if isinstance(d, (str, Path)) else d for d in directions]
    if not loaded:
        raise ValueError("a sweep needs at least one steering (noise direction, h-space vector, text offset)")
    kind = "+".join(dict.fromkeys(d.kind for d in loaded))
    axes_named = sorted({d.axis for d in loaded if d.axis})
    axis_name = axis or (axes_named[0] if len(axes_named) == 1 else None)
    if axis_name is None:
        raise ValueError(
            "say which axis to measure (--axis); the directions name "
            + (f"several: {', '.join(axes_named)}" if axes_named else "none")
        )
    axis_obj = get_axis(axis_name)
    model = default_model() if model is None else model
    if pipe is None:
        pipe = load_pipeline(model, device=device, dtype=dtype)
    if guidance is None:
        guidance = default_guidance(model)
    generator = SteeredGenerator(pipe, steps=steps, guidance=guidance, batch_size=batch_size)
    fingerprint = model_fingerprint(pipe)
    weights = weights_fingerprint(pipe)
    for d in loaded:
        d.check_compatible(generator, fingerprint)
    if classifier is None or isinstance(classifier, str):
        classifier = ClipZeroShotClassifier.from_pretrained(
            classifier or default_classifier(model), device=device
        )
    digests = [d.digest() for d in loaded]

    config = {
        "kind": "sweep",
        "model": model,
        "fingerprint": fingerprint,
        "weights": weights,
        "prompt": prompt,
        "directions": digests,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "axis": axis_name,
        "classifier": classifier.classifier_id,
    }
    keys: dict[float, list[str]] = {}
    jobs = []
    for w in grid:
        keys[w] = []
        for k in range(n):
            steering = {"kind": kind, "directions": digests, "weight": w} if w else {"kind": "none"}
            key = job_key(
                fingerprint=fingerprint,
                weights=weights,
                prompt=prompt,
                seed=seed + k,
                steps=steps,
                guidance=guidance,
                steering=steering,
                shape=list(generator.latent_shape),
            )
            keys[w].append(key)
            request = ImageRequest(prompt=prompt, seed=seed + k)
            for d in loaded if w else ():
                request = d.apply(request, w)
            record = ImageRecord(
                key=key, mitigation=f"w={w:g}", prompt_id="sweep", prompt=prompt, final_prompt=prompt,
                seed=seed + k, image_index=k, steering=steering, model=model, status="ok",
            )  # fmt: skip
            jobs.append((record, request))
    run_dir = Path(out_dir)
    with RunStore.open(run_dir, config, force=force, resumable=False) as store:
        generate_missing(store, jobs, executor or LocalExecutor(generator), progress=progress)
        label_missing(
            store,
            classifier.classifier_id,
            [axis_obj],
            lambda: classifier,
            keys=set(_all(keys)),
            progress=progress,
        )
        by_key = {r.key: r for r in store.images(status="ok")}
        label_of = {
            lab.key: lab.label for lab in store.labels(classifier.classifier_id) if lab.axis == axis_name
        }
        shares: dict[str, list[float]] = {c: [] for c in axis_obj.classes}
        counted, clip_scores, features = [], [], []
        for w in grid:
            records = [by_key[k] for k in keys[w] if k in by_key]
            images: list[Image.Image] = [store.load_image(r) for r in records]
            in_class = [label_of.get(r.key) for r in records if label_of.get(r.key) in shares]
            counted.append(len(in_class))
            for c in shares:
                shares[c].append(in_class.count(c) / len(in_class) if in_class else 0.0)
            clip_scores.append(float(np.mean(classifier.clip_score(images, prompt))) if images else None)
            features.append(classifier.image_features(images).numpy() if len(images) >= 2 else None)

    reference = features[grid.index(0.0)]
    frechet = [
        None if f is None or reference is None else round(frechet_distance(reference, f), 6) for f in features
    ]
    data: dict[str, Any] = {
        "kind": kind,
        "prompt": prompt,
        "axis": axis_name,
        "directions": [d.concept for d in loaded],
        "direction_sha": digests,
        "weight_unit": "+".join(dict.fromkeys(d.strength_unit for d in loaded)),
        "weights": grid,
        "shares": {c: [round(v, 6) for v in vals] for c, vals in shares.items()},
        "n": counted,
        "n_generated": n,
        "clip_score": [None if v is None else round(v, 4) for v in clip_scores],
        "frechet_distance": frechet,
        "model": model,
        "classifier": classifier.classifier_id,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "seconds": round(time.time() - t0, 1),
    }
    if len(loaded) == 1:
        concept = loaded[0].concept
        if concept in shares:
            data["reaches_half_at"] = weight_reaching_share(data, concept)
    json_path = run_dir / SWEEP_JSON
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    plot_path = plot_sweep(data, run_dir / SWEEP_PNG)
    return SweepResult(run_dir, data, json_path, plot_path)


def plot_sweep(data: dict[str, Any], path: Path | str) -> Path:
    """Shares, CLIP score and Fréchet distance against the weight, side by side, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    weights = data["weights"]
    fig = Figure(figsize=(10.5, 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax_share, ax_clip, ax_fd = fig.subplots(1, 3)
    for cls, values in data["shares"].items():
        ax_share.plot(weights, values, marker="o", label=cls)
    ax_share.axhline(1 / max(1, len(data["shares"])), color="#999", lw=0.8, ls="--")
    ax_share.set_ylim(-0.02, 1.02)
    ax_share.set_ylabel(f"share ({data['axis']})")
    ax_share.legend(fontsize=8, frameon=False)
    for ax, key, label in (
        (ax_clip, "clip_score", "CLIP score"),
        (ax_fd, "frechet_distance", "Fréchet distance to w=0"),
    ):
        ax.plot(weights, [math.nan if v is None else v for v in data[key]], marker="o", color="#444")
        ax.set_ylabel(label)
    unit = "noise s.d. along d" if data.get("weight_unit") == "noise_sd" else data.get("weight_unit", "")
    for ax in (ax_share, ax_clip, ax_fd):
        ax.set_xlabel(f"weight ({unit})")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{' + '.join(data['directions'])} on \u201c{data['prompt']}\u201d", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
