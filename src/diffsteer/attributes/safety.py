"""Unsafe concepts as data (``safety.yaml``) and the unsafe rate an audit reports for each.

A bias axis is read as a balance; an unsafe concept is read as a RATE: the share of counted images
whose label on the concept's axis is its unsafe class, with an exact interval per prompt and one that
allows for shared seeds over prompts (:mod:`diffsteer.metrics.pooled_rate`), and each mitigation's
reduction of it against the baseline. The concepts name their image axis (defined in ``axes.yaml``), the
unsafe class of that axis, and the phrases the prompt judge looks for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from diffsteer.attributes.axes import AxisSpecError, builtin_axes
from diffsteer.metrics.pooled_rate import design_effect, pooled_rate, rate_reduction
from diffsteer.metrics.proportion import clopper_pearson

__all__ = [
    "PhraseFileError",
    "UnsafeConcept",
    "UnknownConceptError",
    "concept_for_axis",
    "concepts_with_phrase_file",
    "concept_from_mapping",
    "safety_summary",
    "unsafe_concepts",
    "unsafe_rate",
]

_ALLOWED_KEYS = {"description", "axis", "unsafe_class", "phrases", "allow"}
_PHRASE_FILE_KEYS = {"phrases", "allow"}


class UnknownConceptError(ValueError):
    """Raised for an unsafe concept name that safety.yaml does not define."""


class PhraseFileError(ValueError):
    """A user phrase file that cannot be used: missing, not YAML, or naming an unknown concept or key."""


@dataclass(frozen=True)
class UnsafeConcept:
    """One unsafe concept: the axis that judges images, its unsafe class, and prompt phrases."""

    name: str
    axis: str
    unsafe_class: str
    phrases: tuple[str, ...]
    allow: tuple[str, ...] = ()
    description: str = ""


def _strings(name: str, key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise AxisSpecError(f"concept {name!r}: {key!r} must be a list of phrases")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise AxisSpecError(f"concept {name!r}: {key!r} entries must be non-empty strings, got {item!r}")
        out.append(" ".join(item.split()).lower())
    return tuple(dict.fromkeys(out))


def concept_from_mapping(name: str, mapping: Mapping[str, Any], axes: Mapping[str, Any]) -> UnsafeConcept:
    """Build a concept from its YAML mapping, checking that its axis and unsafe class exist in ``axes``."""
    where = f"concept {name!r}"
    if not isinstance(mapping, Mapping):
        raise AxisSpecError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - _ALLOWED_KEYS)
    if unknown:
        raise AxisSpecError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    axis_name = mapping.get("axis")
    if axis_name not in axes:
        raise AxisSpecError(f"{where}: axis {axis_name!r} is not an axis of axes.yaml ({', '.join(axes)})")
    unsafe_class = mapping.get("unsafe_class")
    classes = axes[axis_name].classes
    if unsafe_class not in classes:
        raise AxisSpecError(
            f"{where}: unsafe_class {unsafe_class!r} is not a class of axis {axis_name!r} {list(classes)}"
        )
    phrases = _strings(name, "phrases", mapping.get("phrases"))
    if not phrases:
        raise AxisSpecError(f"{where}: needs at least one phrase for the prompt judge")
    description = mapping.get("description") or ""
    return UnsafeConcept(
        name=name,
        axis=axis_name,
        unsafe_class=unsafe_class,
        phrases=phrases,
        allow=_strings(name, "allow", mapping.get("allow")),
        description=" ".join(str(description).split()),
    )


@cache
def unsafe_concepts() -> dict[str, UnsafeConcept]:
    """The shipped unsafe concepts by name (safety.yaml beside axes.yaml)."""
    text = resources.files("diffsteer.attributes").joinpath("safety.yaml").read_text(encoding="utf-8")
    spec = yaml.safe_load(text) or {}
    axes = builtin_axes()
    return {name: concept_from_mapping(name, m, axes) for name, m in (spec.get("concepts") or {}).items()}


def concepts_with_phrase_file(path: Path | str) -> dict[str, UnsafeConcept]:
    """The shipped concepts with a user's phrases and allowed phrases added (docs/safety.md).

    The file is YAML shaped like safety.yaml's concepts, with only ``phrases`` and ``allow``:
    ``concepts: {drugs: {phrases: [party candy], allow: [candy store]}}``. A concept must be one that
    safety.yaml defines, since its images are judged by that concept's axis. PhraseFileError, naming
    the file, for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise PhraseFileError(f"phrase file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PhraseFileError(f"{path} is not readable YAML ({first})") from None
    shaped = isinstance(spec, Mapping) and set(spec) == {"concepts"}
    if not shaped or not isinstance(spec["concepts"], Mapping):
        raise PhraseFileError(f"{path}: expected one key 'concepts' holding a mapping of concept names")
    known = unsafe_concepts()
    merged = dict(known)
    for name, extra in spec["concepts"].items():
        if name not in known:
            raise PhraseFileError(f"{path}: unknown concept {name!r}; known: {', '.join(sorted(known))}")
        if not isinstance(extra, Mapping) or not extra or set(extra) - _PHRASE_FILE_KEYS:
            raise PhraseFileError(f"{path}: concept {name!r} takes only 'phrases' and 'allow' lists")
        try:
            phrases = _strings(name, "phrases", extra.get("phrases"))
            allow = _strings(name, "allow", extra.get("allow"))
        except AxisSpecError as exc:
            raise PhraseFileError(f"{path}: {exc}") from None
        base = known[name]
        merged[name] = replace(
            base,
            phrases=tuple(dict.fromkeys([*base.phrases, *phrases])),
            allow=tuple(dict.fromkeys([*base.allow, *allow])),
        )
    return merged


def get_concept(name: str) -> UnsafeConcept:
    """A shipped concept by name; the error lists the known ones."""
    concepts = unsafe_concepts()
    if name not in concepts:
        raise UnknownConceptError(f"unknown unsafe concept {name!r}; known: {', '.join(sorted(concepts))}")
    return concepts[name]


def concept_for_axis(axis: str) -> UnsafeConcept | None:
    """The unsafe concept an axis judges, or None for a bias axis."""
    return next((c for c in unsafe_concepts().values() if c.axis == axis), None)


def unsafe_rate(counts_by_prompt: Mapping[str, Mapping[str, int]], unsafe_class: str) -> dict[str, Any]:
    """The pooled share of ``unsafe_class`` among counted images and its exact 95% interval, counting
    every image as independent.

    Clopper-Pearson on the pooled counts (:mod:`diffsteer.metrics.proportion`): a resampled interval
    would say [0, 0] for 0 of n. Exact for one prompt; pooled over prompts that share seeds it is too
    narrow, which is why an audit's pooled rows use :mod:`diffsteer.metrics.pooled_rate` where it has the
    per-seed labels. With no counted image the rate is None.
    """
    n = sum(int(v) for counts in counts_by_prompt.values() for v in counts.values())
    n_unsafe = sum(int(counts.get(unsafe_class, 0)) for counts in counts_by_prompt.values())
    if n == 0:
        return {"n": 0, "n_unsafe": 0, "unsafe_rate": None, "unsafe_rate_ci95": None}
    return {
        "n": n,
        "n_unsafe": n_unsafe,
        "unsafe_rate": n_unsafe / n,
        "unsafe_rate_ci95": list(clopper_pearson(n_unsafe, n)),
    }


def _hit_matrix(
    labels_by_prompt: Mapping[str, Mapping[int, str | None]], prompts: Sequence[str], unsafe_class: str
) -> tuple[np.ndarray, np.ndarray]:
    """(hits, counted), (prompts, seeds) 0/1 arrays over the union of the prompts' seeds."""
    seeds = sorted({s for p in prompts for s in labels_by_prompt[p]})
    hits = np.zeros((len(prompts), len(seeds)))
    counted = np.zeros_like(hits)
    for i, prompt in enumerate(prompts):
        for j, seed in enumerate(seeds):
            label = labels_by_prompt[prompt].get(seed)
            counted[i, j] = label is not None
            hits[i, j] = label == unsafe_class
    return hits, counted


def _per_seed_labels(details: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, dict]]:
    """(mitigation, axis) -> prompt -> {seed: label or None} from summary ``details`` rows with seeds."""
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for d in details:
        seeds, labels = d.get("seeds"), d.get("labels")
        if d.get("prompt") is None or seeds is None or labels is None or len(seeds) != len(labels):
            continue
        out.setdefault((d["mitigation"], d["axis"]), {})[d["prompt"]] = dict(zip(seeds, labels, strict=True))
    return out


def safety_summary(
    results: Sequence[Mapping[str, Any]], details: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """summary.json's ``safety`` section, from its ``results`` rows (and ``details`` rows, for seeds):
    the concepts an audit judged; one rate row per (mitigation, concept, prompt) plus an aggregate row
    (prompt None) over prompts; and ``changes``, each later mitigation's reduction of the pooled rate
    against the first (the baseline) on the prompts both made.

    With per-seed labels the aggregate rows and the changes allow for the seeds that every prompt
    shares (:mod:`diffsteer.metrics.pooled_rate`; ``design_effect`` says by how much). Without them (a
    summary written before per-seed labels) the aggregate rows count images as independent
    (``design_effect`` None) and there are no changes; a report can still rebuild the section.
    """
    concepts: dict[str, UnsafeConcept] = {}
    rows = []
    groups: dict[tuple[str, str], dict[str, Mapping[str, int]]] = {}
    for r in results:
        concept = concept_for_axis(r["axis"])
        if concept is None or r["prompt"] is None:
            continue
        concepts[concept.name] = concept
        groups.setdefault((r["mitigation"], concept.name), {})[r["prompt"]] = r["counts"]
    by_seed = _per_seed_labels(details)
    changes = []
    for name, concept in concepts.items():
        arms = {m: by_prompt for (m, c), by_prompt in groups.items() if c == name}
        matrices = {}
        for mitigation, by_prompt in arms.items():
            labels = by_seed.get((mitigation, concept.axis), {})
            if all(p in labels for p in by_prompt):
                matrices[mitigation] = _hit_matrix(labels, list(by_prompt), concept.unsafe_class)
        # the arms share prompts and seeds: each takes the largest design effect among them
        shared = max((design_effect(*m) for m in matrices.values()), default=1.0)
        for mitigation, by_prompt in arms.items():
            base = {"mitigation": mitigation, "concept": name, "axis": concept.axis}
            for prompt, counts in by_prompt.items():
                rows.append(
                    base
                    | {"prompt": prompt}
                    | unsafe_rate({prompt: counts}, concept.unsafe_class)
                    | {"design_effect": None}
                )
            pooled = unsafe_rate(by_prompt, concept.unsafe_class) | {"design_effect": None}
            if mitigation in matrices and pooled["n"]:
                clustered = pooled_rate(*matrices[mitigation], at_least=shared)
                pooled |= {"unsafe_rate_ci95": clustered["ci"], "design_effect": clustered["design_effect"]}
            rows.append(base | {"prompt": None} | pooled)
        baseline = next(iter(arms))
        for mitigation in arms:
            if mitigation == baseline or baseline not in matrices or mitigation not in matrices:
                continue
            prompts = [p for p in arms[mitigation] if p in arms[baseline]]
            if not prompts:
                continue
            labels = [by_seed[(m, concept.axis)] for m in (baseline, mitigation)]
            change = rate_reduction(*(_hit_matrix(lab, prompts, concept.unsafe_class) for lab in labels))
            changes.append(
                {"mitigation": mitigation, "concept": name, "axis": concept.axis, "baseline": baseline,
                 "prompts": len(prompts), "reduction": change["reduction"], "reduction_ci95": change["ci"]}
            )  # fmt: skip
    return {
        "concepts": [
            {"name": c.name, "axis": c.axis, "unsafe_class": c.unsafe_class} for c in concepts.values()
        ],
        "rates": rows,
        "changes": changes,
    }
