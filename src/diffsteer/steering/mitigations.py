"""Mitigations an audit compares, each turning a benchmark prompt and a seed into a steered request.

Every mitigation keeps the image's seed, so image k of a prompt starts from the same initial noise
under all of them: the audit compares mitigations pair by pair, not only in aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from diffsteer.benchmarks.spec import PromptSpec
from diffsteer.generate import ImageRequest
from diffsteer.steering.prompt import intervention_prompt

MITIGATIONS = {
    "none": "the prompt as written",
    "intervention": "ENTIGEN: an ethical intervention appended to the prompt",
}


class UnknownMitigationError(ValueError):
    pass


@dataclass(frozen=True)
class PlannedImage:
    """One image to make: the request for the generator and a JSON description of its steering."""

    request: ImageRequest
    steering: dict = field(default_factory=dict)


def check_mitigations(names: Sequence[str]) -> tuple[str, ...]:
    for name in names:
        if name not in MITIGATIONS:
            raise UnknownMitigationError(f"unknown mitigation '{name}'; available: {', '.join(MITIGATIONS)}")
    if len(set(names)) != len(names):
        raise UnknownMitigationError(f"mitigation listed twice in {', '.join(names)}")
    return tuple(names)


def plan_image(mitigation: str, spec: PromptSpec, axes: Sequence[str], seed: int) -> PlannedImage:
    if mitigation == "none":
        return PlannedImage(ImageRequest(prompt=spec.text, seed=seed), {"kind": "none"})
    if mitigation == "intervention":
        text = intervention_prompt(spec, axes)
        return PlannedImage(ImageRequest(prompt=text, seed=seed), {"kind": "prompt", "rewrite": "entigen"})
    raise UnknownMitigationError(f"unknown mitigation '{mitigation}'; available: {', '.join(MITIGATIONS)}")
