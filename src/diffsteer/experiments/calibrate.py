"""Choosing a steering's strength for fair generation: the fair-mixture rule, measured by sweeps.

One rule for every steering kind: noise directions, h-space vectors and text offsets alike get their
default strength (``recommended_weight`` in the file) from it, measured at the model's own guidance
(the one audits and fair generation use). The sweeps and this module call a strength a weight.

Fair generation steers every image toward one class of the axis, chosen per seed so that the classes'
shares follow a target (uniform by default): with two noise directions, half of the images get
``+w*d`` and half ``-w*d``; with h-space vectors half get ``w*v_woman`` and half ``w*v_man``.
So the weight that matters is the one at which that *mixture* comes out at the target
on a prompt the model skews, not the one at which a single class merely reaches half of the images:
on a prompt skewed against a class, the images pushed toward the majority stay (almost) all majority,
and a push that brings the minority class to half of its own images leaves the mixture near 3:1.

The rule, stated once and applied to any model and kind (a noise weight is in noise standard
deviations along ``d``, which mean the same on any latent size, see :mod:`diffsteer.steering.noise`;
an h-space or text weight is a multiple of the learned tensor):

1. for each calibration prompt (prompts the model skews, ideally against each class in turn), sweep
   every class's direction over the same positive weights on the same seeds (:func:`run_sweep`);
2. at each weight, the fair mixture's share of class ``c`` is ``sum_k target_k * share_c(d_k at w)``:
   the share an audit would see if fraction ``target_k`` of the images were steered toward ``k``;
3. a prompt's fair weight is the smallest swept weight at which every class's mixture share is within
   ``tolerance`` (default 0.1: a deviation ratio of at most 0.2 with two classes) of its target;
4. the axis's weight is the largest of its prompts' fair weights, so that every calibration prompt
   is balanced; if some prompt never is, the largest swept weight, and the record says so.

Smallest, because a stronger push costs fidelity (the sweeps record CLIP score and Fréchet distance
per weight, kept in the calibration record).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffsteer.experiments.sweep import Progress, run_sweep
from diffsteer.steering.method import SteeringMethod
from diffsteer.steering.noise import NoiseDirection

FAIR_TOLERANCE = 0.1
"""How far a class's share in the fair mixture may sit from its target for a weight to count as fair."""
CALIBRATION_WEIGHTS = NoiseDirection.calibration_strengths
"""The noise directions' grid; each kind has its own (``calibration_strengths`` of its class)."""
CALIBRATION_JSON = "calibration.json"
CALIBRATION_PNG = "calibration.png"


def check_axis_classes(axis: str, classes: Sequence[str]) -> None:
    """Refuse classes the axis's classifier cannot name (it labels the sweeps' images by its classes)."""
    from diffsteer.attributes import get_axis

    named = get_axis(axis).classes
    unknown = [c for c in classes if c not in named]
    if unknown:
        raise ValueError(
            f"class {', '.join(unknown)} is not a class of axis '{axis}' ({', '.join(named)}); "
            "name the directions by the axis's classes to calibrate them"
        )


def fair_mixture_shares(
    sweeps: Mapping[str, Mapping[str, Any]], target: Mapping[str, float]
) -> dict[float, dict[str, float]]:
    """Each class's share in the fair mixture at every weight swept for all directions.

    ``sweeps`` maps each class to the sweep data (``run_sweep(...).data``) of its own direction on
    one prompt; ``target`` gives the fraction of images steered toward each class. A weight at which
    some direction's images were all unclassified is left out.
    """
    missing = set(target) - set(sweeps)
    if missing:
        raise ValueError(f"no sweep for class {', '.join(sorted(missing))}")
    counted: dict[str, dict[float, dict[str, float]]] = {}
    for k, data in sweeps.items():
        counted[k] = {
            float(w): {c: data["shares"][c][i] for c in target}
            for i, w in enumerate(data["weights"])
            if data["n"][i] > 0
        }
    common = set.intersection(*(set(v) for v in counted.values()))
    return {w: {c: sum(target[k] * counted[k][w][c] for k in target) for c in target} for w in sorted(common)}


def recommend_fair_weight(
    mixture: Mapping[float, Mapping[str, float]],
    target: Mapping[str, float],
    tolerance: float = FAIR_TOLERANCE,
) -> float | None:
    """The smallest positive weight whose mixture shares are all within ``tolerance`` of ``target``."""
    for w in sorted(mixture):
        # the small slack keeps a share exactly on the edge (0.4 for 0.5 +- 0.1) inside, whatever the rounding
        if w > 0 and all(abs(mixture[w][c] - t) <= tolerance + 1e-9 for c, t in target.items()):
            return float(w)
    return None


def _mixture_clip_score(sweeps: Mapping[str, Mapping[str, Any]], target: Mapping[str, float], w: float):
    """Mean CLIP score of the mixture's images against the prompt at weight ``w`` (a fidelity cost)."""
    scores = [sweeps[k]["clip_score"][sweeps[k]["weights"].index(w)] for k in target]
    if any(s is None for s in scores):
        return None
    return sum(target[k] * s for k, s in zip(target, scores, strict=True))


def _named(progress: Progress | None, prompt: str, concept: str) -> Progress | None:
    """Progress whose stage names say which sweep it is: "calibrate 'a photo of a pilot' → dark: generate"."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"calibrate {prompt!r} \u2192 {concept}: {stage}", done, total)


_UNIT_LABELS = {
    "noise_sd": "weight (noise s.d. along d)",
    "vector": "strength (multiples of the vector)",
    "difference": "weight (multiples of the offset)",
}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "prompt"


def calibrate_fair_strength(
    directions: Sequence[SteeringMethod],
    prompts: Sequence[str],
    *,
    out_dir: Path | str,
    model: str | None = None,
    pipe: Any = None,
    weights: Sequence[float] | None = None,
    n: int = 32,
    seed: int = 0,
    target: Mapping[str, float] | None = None,
    tolerance: float = FAIR_TOLERANCE,
    classifier: Any = None,
    steps: int = 20,
    guidance: float | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure one axis's fair weight (module docstring) and store it in every steering's metadata.

    ``directions`` are the steerings of one kind for the classes of one axis (noise directions as
    learned together, or one h-space vector or text offset per class); each is swept on every prompt
    under ``out_dir/<prompt>/<class>`` (resumable run stores) over ``weights`` (default: the kind's
    ``calibration_strengths``) at ``guidance`` (default: the model's own). Returns the calibration
    record, also written to ``out_dir/calibration.json`` and kept in each steering's
    ``weight_calibration``; the steerings are changed in place (``set_default_strength``), not saved.
    """
    if len(directions) < 2:
        raise ValueError("calibrating a fair weight needs the steerings of at least two classes of one axis")
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("give at least one non-empty calibration prompt (one the model skews)")
    kinds = {d.kind for d in directions}
    if len(kinds) != 1:
        raise ValueError(f"calibrate one kind of steering at a time, got {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    axes = {d.axis for d in directions}
    if len(axes) != 1 or None in axes:
        raise ValueError("calibration needs steerings of one named axis (learn them with --axis)")
    axis = axes.pop()
    classes = [d.class_name or d.concept for d in directions]
    if len(set(classes)) != len(classes):
        raise ValueError(f"each class once, got {', '.join(classes)}")
    check_axis_classes(axis, classes)
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    target = dict(target) if target is not None else {c: 1 / len(classes) for c in classes}
    if set(target) != set(classes) or abs(sum(target.values()) - 1) > 1e-6:
        raise ValueError(f"target must give every class ({', '.join(classes)}) a share, summing to 1")
    if weights is None:
        weights = type(directions[0]).calibration_strengths
    grid = sorted({float(w) for w in weights if w > 0})
    if not grid:
        raise ValueError("calibration needs positive weights")
    if model is None:
        from diffsteer.registry import default_model

        model = default_model()
    if pipe is None:
        from diffsteer.models import load_pipeline

        pipe = load_pipeline(model, device=device, dtype=dtype)
    if classifier is None or isinstance(classifier, str):  # load once for all the sweeps
        from diffsteer.attributes import ClipZeroShotClassifier
        from diffsteer.models import default_classifier

        classifier = ClipZeroShotClassifier.from_pretrained(
            classifier or default_classifier(model), device=device
        )

    out_dir = Path(out_dir)
    per_prompt = []
    for prompt in prompts:
        sweeps = {}
        for cls, d in zip(classes, directions, strict=True):
            sweeps[cls] = run_sweep(
                prompt, [d], grid, out_dir=out_dir / _slug(prompt) / cls, model=model, pipe=pipe,
                n=n, seed=seed, axis=axis, classifier=classifier, steps=steps, guidance=guidance,
                batch_size=batch_size, device=device, dtype=dtype,
                progress=_named(progress, prompt, cls),
            ).data  # fmt: skip
        mixture = fair_mixture_shares(sweeps, target)
        fair = recommend_fair_weight(mixture, target, tolerance)
        clip = {w: _mixture_clip_score(sweeps, target, w) for w in mixture}
        per_prompt.append({
            "prompt": prompt,
            "weights": list(mixture),
            "mixture_share": {c: [round(mixture[w][c], 4) for w in mixture] for c in classes},
            "clip_score": [None if clip[w] is None else round(clip[w], 3) for w in mixture],
            "fair_weight": fair,
        })  # fmt: skip
    reached = [p["fair_weight"] for p in per_prompt if p["fair_weight"] is not None]
    complete = len(reached) == len(per_prompt)
    weight = max(reached) if complete else max(grid)
    record = {
        "kind": kind,
        "weight_unit": type(directions[0]).strength_unit,
        "axis": axis,
        "classes": classes,
        "target": target,
        "tolerance": tolerance,
        "rule": (
            f"fair mixture: the smallest swept weight at which every class's share, with each image pushed "
            f"toward one class in the target proportions, is within {tolerance:g} of its target; the "
            f"largest over the calibration prompts"
            + ("" if complete else "; not reached on every prompt, so the largest swept weight")
        ),
        "recommended_weight": weight,
        "reached": complete,
        "n": n,
        "seed": seed,
        "guidance": guidance if guidance is not None else next(iter(sweeps.values()))["guidance"],
        "prompts": per_prompt,
    }
    for d in directions:
        d.set_default_strength(weight, rule=record["rule"], record=record)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CALIBRATION_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    plot_calibration(record, out_dir / CALIBRATION_PNG)
    return record


calibrate_noise_weight = calibrate_fair_strength
"""The name from when the rule calibrated noise directions only."""


def plot_calibration(record: Mapping[str, Any], path: Path | str) -> Path:
    """The fair mixture's share of each class against the weight, one panel per prompt, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    prompts = record["prompts"]
    fig = Figure(figsize=(3.6 * len(prompts), 3.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(prompts), squeeze=False)[0]
    for ax, p in zip(axes, prompts, strict=True):
        for c, values in p["mixture_share"].items():
            t = record["target"][c]
            line = ax.plot(p["weights"], values, marker="o", label=c)[0]
            ax.axhspan(t - record["tolerance"], t + record["tolerance"], color=line.get_color(), alpha=0.08)
        ax.axvline(record["recommended_weight"], color="#444", lw=0.8, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"\u201c{p['prompt']}\u201d", fontsize=9)
        ax.set_xlabel(_UNIT_LABELS.get(record.get("weight_unit", "noise_sd"), "weight"))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"share in the fair mixture ({record['axis']})")
    axes[0].legend(fontsize=8, frameon=False)
    fig.suptitle(
        f"fair weight {record['recommended_weight']:g} (dashed); bands: target \u00b1 tolerance", fontsize=10
    )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
