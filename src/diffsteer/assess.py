"""The parts of summary.json that judge the audit itself: image quality per mitigation, the auditor's own
error on labelled reference images, and provenance.

Kept apart from :func:`diffsteer.audit.build_summary` so that the documented ``results`` rows never
change; these land under new top-level keys ``quality``, ``auditor`` and ``provenance``.

* ``quality``: CLIP score (100 x cosine between the image and the prompt as written, with the run's
  own CLIP) per mitigation, with a bootstrap interval, and the Fréchet distance between CLIP image
  features of the baseline's images and each mitigation's images (pooled over prompts; both sets
  hold the same prompts in the same proportions, so the distance measures what the mitigation
  changed, not which prompts were asked).
* ``auditor``: the classifier's confusion matrix per axis on a labelled reference set and, per
  (mitigation, axis, prompt), the class shares corrected for its errors
  (:mod:`diffsteer.metrics.confusion`) next to the raw shares.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffsteer.attributes import Axis, ClipZeroShotClassifier, get_axis
from diffsteer.metrics.confusion import (
    ABSTAINED,
    MAX_CLASSES,
    AxisCorrection,
    confusion_matrix,
    correct_axis,
)
from diffsteer.provenance import collect_provenance
from diffsteer.reference import ReferenceSet, load_reference_folder
from diffsteer.registry import bundled_model
from diffsteer.runs.store import ImageRecord, RunStore
from diffsteer.summary import AuditorSection, QualitySection, Summary

__all__ = ["AUTO", "assess_run", "auditor_section", "quality_section", "resolve_reference", "summary_axes"]

AUTO = "auto"
BASELINE = "none"
CORRECTION_METHOD = (
    "constrained least squares: argmin over distributions t of ||M^T t - o||^2, where o are the raw "
    "shares among counted images and M[i, j] = P(classifier says j | truly i, not abstained) on the "
    "reference set; exact over every support set; 95% intervals by bootstrap over both the audit's "
    "counts and the reference rows (1000 draws). Assumes the classifier errs on generated images as "
    "on the reference images and abstains independently of the true class."
)
_N_BOOT_CORRECTION = 1000
_N_BOOT_CLIP = 2000
_FEATURE_CHUNK = 256


def summary_axes(summary: Summary) -> list[Axis]:
    """The audit's axes, rebuilt from the config stored in summary.json."""
    cfg = summary.config
    return [get_axis(name, culture_classes=cfg.culture_classes) for name in cfg.axes]


def resolve_reference(reference: str | Path | ReferenceSet | None, model: str) -> ReferenceSet | None:
    """``"auto"``: the reference set a bundled model registered, none otherwise; a path: a labelled folder."""
    if reference is None or isinstance(reference, ReferenceSet):
        return reference
    if str(reference) == AUTO:
        entry = bundled_model(model)
        found = entry.reference_set() if entry is not None else None
        if found is not None and not isinstance(found, ReferenceSet):
            raise ValueError(f"model {model!r}: its registered reference returned {type(found).__name__}")
        return found
    return load_reference_folder(reference)


def _mitigation_order(summary: Summary) -> list[str]:
    return list(dict.fromkeys(r.mitigation for r in summary.results))


def _features_and_scores(
    classifier: ClipZeroShotClassifier, store: RunStore, records: Sequence[ImageRecord]
) -> tuple[np.ndarray, np.ndarray]:
    """CLIP image features (N, D) and CLIP scores against each record's prompt as written (N,)."""
    feats, scores = [], []
    for start in range(0, len(records), _FEATURE_CHUNK):
        chunk = records[start : start + _FEATURE_CHUNK]
        f = classifier.image_features([store.load_image(r) for r in chunk])
        t = classifier.text_features([r.prompt for r in chunk])
        feats.append(f.numpy())
        scores.append(100.0 * (f * t).sum(dim=-1).numpy())
    if not feats:
        return np.zeros((0, 0)), np.zeros(0)
    return np.concatenate(feats).astype(np.float64), np.concatenate(scores).astype(np.float64)


def _mean_interval(values: np.ndarray, seed: int) -> list[float] | None:
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    per_chunk = max(1, 4_000_000 // values.size)  # bounded memory for large audits
    means = np.concatenate(
        [
            values[
                rng.integers(0, values.size, size=(min(per_chunk, _N_BOOT_CLIP - done), values.size))
            ].mean(1)
            for done in range(0, _N_BOOT_CLIP, per_chunk)
        ]
    )
    lo, hi = np.quantile(means, [0.025, 0.975])
    return [float(lo), float(hi)]


def quality_section(
    store: RunStore,
    summary: Summary,
    classifier: ClipZeroShotClassifier,
    planned: Iterable[str] | None = None,
) -> QualitySection:
    """CLIP score and Fréchet distance to the baseline, per mitigation (see the module docstring)."""
    keys = set(planned) if planned is not None else None
    mitigations = _mitigation_order(summary)
    baseline = BASELINE if BASELINE in mitigations else mitigations[0]
    seed = int(summary.config.seed or 0)
    feats: dict[str, np.ndarray] = {}
    rows = []
    for mitigation in mitigations:
        recs = [
            r
            for r in store.images(mitigation=mitigation, status="ok")
            if r.png is not None and (keys is None or r.key in keys)
        ]
        f, scores = _features_and_scores(classifier, store, recs)
        feats[mitigation] = f
        per_prompt: dict[str, list[float]] = {}
        for rec, score in zip(recs, scores, strict=True):
            per_prompt.setdefault(rec.prompt, []).append(float(score))
        rows.append(
            {
                "mitigation": mitigation,
                "n_images": len(recs),
                "clip_score": float(scores.mean()) if scores.size else None,
                "clip_score_ci95": _mean_interval(scores, seed),
                "clip_score_per_prompt": {p: float(np.mean(v)) for p, v in per_prompt.items()},
                "frechet_distance": None,
            }
        )
    for row in rows:
        a, b = feats[baseline], feats[row["mitigation"]]
        if row["mitigation"] == baseline:
            row["frechet_distance"] = 0.0 if len(a) >= 2 else None
        elif len(a) >= 2 and len(b) >= 2:
            from diffsteer.metrics.quality import frechet_distance

            row["frechet_distance"] = float(frechet_distance(a, b))
    return QualitySection.from_dict(
        {
            "clip": summary.classifier,
            "baseline": baseline,
            "clip_score": "100 x cosine(CLIP image, CLIP text of the prompt as written, before any rewrite)",
            "frechet_distance": "between CLIP image features of the baseline's and the mitigation's images",
            "mitigations": rows,
        }
    )


def _reference_predictions(
    classifier: ClipZeroShotClassifier, reference: ReferenceSet, axes: Sequence[Axis]
) -> dict[str, list[str | None]]:
    """The classifier's label per reference image and axis; None when the person filter dropped it."""
    labels = classifier.classify(reference.images, axes)
    return {
        axis.name: [lab.axes[axis.name].label if lab.drop_reason is None else None for lab in labels]
        for axis in axes
    }


def _shares(counts: dict[str, int], classes: Sequence[str]) -> dict[str, float] | None:
    n = sum(counts.values())
    return {c: counts[c] / n for c in classes} if n else None


def _r(x: float) -> float:
    """Rounded to 6 decimals: the solver's 1e-16 residues are noise, not information."""
    return round(float(x), 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def _opt(x: float) -> float | None:
    return _r(x) if np.isfinite(x) else None


def _corrected_prompt(fix: AxisCorrection, i: int, classes: Sequence[str]) -> dict[str, Any]:
    """Corrected shares, their intervals and deviation ratio of prompt ``i`` (None when it had no images)."""
    if not np.all(np.isfinite(fix.shares[i])):
        return {"shares": None, "shares_ci95": None, "deviation_ratio": None, "deviation_ratio_ci95": None}
    return {
        "shares": {c: _r(v) for c, v in zip(classes, fix.shares[i], strict=True)},
        "shares_ci95": {c: [_r(lo), _r(hi)] for c, (lo, hi) in zip(classes, fix.shares_ci95[i], strict=True)},
        "deviation_ratio": _r(fix.deviation_ratio[i]),
        "deviation_ratio_ci95": [_r(v) for v in fix.deviation_ratio_ci95[i]],
    }


def auditor_section(
    summary: Summary,
    classifier: ClipZeroShotClassifier,
    reference: ReferenceSet,
    axes: Sequence[Axis],
) -> AuditorSection:
    """Confusion matrix per axis on ``reference`` and corrected shares per (mitigation, axis, prompt)."""
    predictions = _reference_predictions(classifier, reference, axes)
    seed = int(summary.config.seed or 0)
    axis_rows, corrected = [], []
    for axis in axes:
        truth = reference.labels.get(axis.name)
        row: dict[str, Any] = {"axis": axis.name, "classes": list(axis.classes), "confusion": None}
        axis_rows.append(row)
        if truth is None:
            row["note"] = f"the reference set has no labels for {axis.name}"
            continue
        pairs = [(t, p) for t, p in zip(truth, predictions[axis.name], strict=True) if t is not None]
        foreign = sorted({t for t, _ in pairs} - set(axis.classes))
        if foreign:
            row["note"] = f"reference labels {foreign} are not classes of this axis {list(axis.classes)}"
            continue
        if len(axis.classes) > MAX_CLASSES:
            row["note"] = f"correction supports at most {MAX_CLASSES} classes"
            continue
        k = confusion_matrix([t for t, _ in pairs], [p for _, p in pairs], axis.classes)
        diagonal = int(np.trace(k[:, :-1]))
        row.update(
            columns=[*axis.classes, ABSTAINED],
            confusion=k.tolist(),
            n=int(k.sum()),
            accuracy=diagonal / int(k.sum()) if k.sum() else None,
            accuracy_when_counted=diagonal / int(k[:, :-1].sum()) if k[:, :-1].sum() else None,
        )
        if np.any(k[:, :-1].sum(axis=1) == 0):
            row["note"] = "a true class has no counted reference image; shares are not corrected"
            continue
        for mitigation in _mitigation_order(summary):
            prompt_rows = summary.rows(mitigation=mitigation, axis=axis.name, aggregate=False)
            if not prompt_rows:
                continue
            observed = np.array([[r.counts[c] for c in axis.classes] for r in prompt_rows])
            fix = correct_axis(observed, k, n_boot=_N_BOOT_CORRECTION, seed=seed)
            for i, r in enumerate(prompt_rows):
                corrected.append(
                    {
                        "mitigation": mitigation,
                        "axis": axis.name,
                        "prompt": r.prompt,
                        "raw_shares": _shares(r.counts, axis.classes),
                        "raw_deviation_ratio": r.deviation_ratio,
                        **_corrected_prompt(fix, i, axis.classes),
                    }
                )
            aggregate = summary.aggregate(mitigation, axis.name)
            assert aggregate is not None  # an audit writes the mean row beside every axis's prompt rows
            lo, hi = fix.mean_deviation_ratio_ci95
            corrected.append(
                {
                    "mitigation": mitigation,
                    "axis": axis.name,
                    "prompt": None,
                    "raw_shares": _shares(aggregate.counts, axis.classes),
                    "raw_deviation_ratio": aggregate.deviation_ratio,
                    "deviation_ratio": _opt(fix.mean_deviation_ratio),
                    "deviation_ratio_ci95": [_r(lo), _r(hi)] if np.isfinite(lo) and np.isfinite(hi) else None,
                }
            )
    return AuditorSection.from_dict(
        {
            "reference": {"source": reference.source, **reference.info},
            "classifier": summary.classifier,
            "method": CORRECTION_METHOD,
            "axes": axis_rows,
            "corrected": corrected,
        }
    )


def assess_run(
    store: RunStore,
    summary: Summary,
    *,
    planned: Iterable[str] | None = None,
    reference: str | Path | ReferenceSet | None = AUTO,
    device: str = "cpu",
) -> Summary:
    """Fill ``summary``'s ``quality``, ``auditor`` (None without a reference set) and ``provenance``."""
    classifier = ClipZeroShotClassifier.from_pretrained(summary.classifier, device=device)
    summary.quality = quality_section(store, summary, classifier, planned)
    ref = resolve_reference(reference, summary.config.model)
    summary.auditor = auditor_section(summary, classifier, ref, summary_axes(summary)) if ref else None
    summary.provenance = collect_provenance(store.run_dir, device=device)
    return summary
