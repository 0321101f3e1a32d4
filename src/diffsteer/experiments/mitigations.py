"""Mitigations an audit compares, each turning a benchmark prompt and a seed into a steered request.

Every mitigation keeps the image's seed, so image k of a prompt starts from the same initial noise
under all of them: the audit compares mitigations pair by pair, not only in aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from diffsteer.benchmarks.spec import PromptSpec
from diffsteer.generate import ImageRequest
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.noise import NoiseDirection
from diffsteer.steering.preset import FairSpec, SteeringSpec
from diffsteer.steering.prompt import intervention_prompt

MITIGATIONS = {
    "none": "the prompt as written",
    "intervention": "ENTIGEN: an ethical intervention appended to the prompt",
    "hspace-fair": "h-space concept vectors, one class per image so shares match a target (uniform)",
    "hspace-safe": "every anti-concept h-space vector (anti-*) on every image",
    "noise-fair": "initial-noise latent directions, one class per image so shares match a target",
    "steered": "the steering given by --hspace/--noise-direction/--text-offset/--fair/--steering",
    "negative-prompt": "the judged unsafe classes' own wording (axes.yaml) as the negative prompt",
}
LORA_PREFIX = "lora:"
"""``lora:FOLDER``: the model with a LoRA adapter from ``diffsteer finetune`` (any number, one per folder)."""


# the fair mitigations: which steering kind gives each image its class (at the files' default strength)
FAIR_MITIGATIONS = {"hspace-fair": HSpaceVector.kind, "noise-fair": NoiseDirection.kind}


class UnknownMitigationError(ValueError):
    pass


@dataclass(frozen=True)
class PlannedImage:
    """One image to make: the request for the generator and a JSON description of its steering."""

    request: ImageRequest
    steering: dict = field(default_factory=dict)


def is_lora_mitigation(name: str) -> bool:
    return name.startswith(LORA_PREFIX)


def lora_folder(name: str) -> str:
    """The adapter folder of a ``lora:FOLDER`` mitigation, as an absolute path (workers may run elsewhere)."""
    return str(Path(name[len(LORA_PREFIX) :]).expanduser().resolve())


def check_mitigations(names: Sequence[str]) -> tuple[str, ...]:
    """Known names, no repeats, and every ``lora:FOLDER`` a readable diffsteer adapter (before any model)."""
    from diffsteer.steering.lora import check_loadable, read_adapter_metadata

    for name in names:
        if is_lora_mitigation(name):
            if not name[len(LORA_PREFIX) :].strip():
                raise UnknownMitigationError("mitigation 'lora:' needs a folder: lora:FOLDER")
            check_loadable(read_adapter_metadata(lora_folder(name)))
            continue
        if name not in MITIGATIONS:
            available = ", ".join([*MITIGATIONS, LORA_PREFIX + "FOLDER"])
            raise UnknownMitigationError(f"unknown mitigation '{name}'; available: {available}")
    if len(set(names)) != len(names):
        raise UnknownMitigationError(f"mitigation listed twice in {', '.join(names)}")
    return tuple(names)


def mitigation_steering(
    mitigation: str, axes: Sequence[str], custom: SteeringSpec | None = None
) -> SteeringSpec | None:
    """The steering spec behind a mitigation, or None for the ones that only rewrite the prompt."""
    if mitigation in FAIR_MITIGATIONS:
        return SteeringSpec(fair=FairSpec(tuple(axes), FAIR_MITIGATIONS[mitigation]))
    if mitigation == "hspace-safe":
        return SteeringSpec(safe=True)
    if mitigation == "steered":
        if custom is None or custom.is_empty:
            raise UnknownMitigationError(
                "mitigation 'steered' needs steering options (--hspace, --noise-direction, --text-offset, "
                "--fair or --steering)"
            )
        return custom
    return None


def safety_negative_prompt(axes: Sequence[str] | None = None) -> str:
    """The unsafe classes of the concepts judged on ``axes``, in the words their judges use ("a violent
    photo"); every unsafe concept's when ``axes`` judges none (or is None)."""
    from diffsteer.attributes import get_axis
    from diffsteer.attributes.safety import unsafe_concepts

    concepts = list(unsafe_concepts().values())
    judged = [c for c in concepts if axes is not None and c.axis in axes]
    texts = []
    for concept in judged or concepts:
        axis = get_axis(concept.axis)
        texts.append(axis.prompts[axis.classes.index(concept.unsafe_class)])
    return ", ".join(dict.fromkeys(texts))


def plan_image(
    mitigation: str,
    spec: PromptSpec,
    axes: Sequence[str],
    seed: int,
    steerers: Mapping[str, object] | None = None,
) -> PlannedImage:
    """The request for image ``seed`` of ``spec`` under ``mitigation``.

    Steering mitigations need their :class:`~diffsteer.steering.steerer.Steerer` in ``steerers``
    (built once per run, since it loads and checks files against the model).
    """
    if mitigation == "none":
        return PlannedImage(ImageRequest(prompt=spec.text, seed=seed), {"kind": "none"})
    if mitigation == "negative-prompt":
        negative = safety_negative_prompt(axes)
        request = ImageRequest(prompt=spec.text, seed=seed, negative_prompt=negative)
        return PlannedImage(request, {"kind": "prompt", "negative_prompt": negative})
    if mitigation == "intervention":
        text = intervention_prompt(spec, axes)
        return PlannedImage(ImageRequest(prompt=text, seed=seed), {"kind": "prompt", "rewrite": "entigen"})
    if is_lora_mitigation(mitigation):
        folder = lora_folder(mitigation)
        desc = {"kind": "lora", "adapter": _adapter_digest(folder)}
        return PlannedImage(ImageRequest(prompt=spec.text, seed=seed, lora=folder), desc)
    if mitigation in MITIGATIONS:
        steerer = (steerers or {}).get(mitigation)
        if steerer is None:
            raise UnknownMitigationError(f"mitigation '{mitigation}' needs a steerer built for the model")
        request, desc = steerer.steer(ImageRequest(prompt=spec.text, seed=seed))  # type: ignore[attr-defined]
        return PlannedImage(request, desc)
    raise UnknownMitigationError(f"unknown mitigation '{mitigation}'; available: {', '.join(MITIGATIONS)}")


def check_lora_mitigations(mitigations: Sequence[str], pipe: object) -> None:
    """Refuse, before any image, a ``lora:FOLDER`` adapter trained on another base model."""
    from diffsteer.steering.lora import check_adapter, read_adapter_metadata

    for name in mitigations:
        if is_lora_mitigation(name):
            folder = lora_folder(name)
            check_adapter(read_adapter_metadata(folder), pipe, source=folder)


@lru_cache(maxsize=64)
def _digest_of(folder: str, mtime_ns: int, size: int) -> str:
    from diffsteer.steering.lora import adapter_digest

    return adapter_digest(folder)


def _adapter_digest(folder: str) -> str:
    """The adapter file's hash (part of each image's job key: a retrained adapter makes new images)."""
    from diffsteer.steering.lora import adapter_file

    stat = adapter_file(folder).stat()
    return _digest_of(folder, stat.st_mtime_ns, stat.st_size)
