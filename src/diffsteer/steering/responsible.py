"""Responsible prompt following: a prompt that asks for a responsible property gets the vectors for it.

Text encoders often ignore clauses such as "either male or female" or "without violence" (ENTIGEN's
interventions help only partly). When a prompt states such a property, the steerer switches on the
matching steering: fair generation over the named axis, or the anti-concept vector of the named
unsafe concept. The phrase lists are data; extend them for other wordings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# axis -> phrases asking for a balance over it (matched case-insensitively, as whole words)
FAIR_PHRASES: dict[str, tuple[str, ...]] = {
    "gender": (
        "either male or female",
        "either a man or a woman",
        "male or female",
        "man or woman",
        "irrespective of their gender",
        "irrespective of gender",
        "regardless of gender",
        "regardless of their gender",
        "of any gender",
    ),
    "skin_tone": (
        "irrespective of their skin color",
        "irrespective of skin color",
        "regardless of skin color",
        "regardless of their skin color",
        "of any skin color",
        "of any skin tone",
        "light-skinned or dark-skinned",
    ),
    "culture": (
        "irrespective of their culture",
        "regardless of culture",
        "from any culture",
    ),
}

# anti-concept name (an h-space file ``anti-<concept>``) -> phrases asking to avoid the concept
SAFE_PHRASES: dict[str, tuple[str, ...]] = {
    "violence": (
        "without violence",
        "with no violence",
        "non-violent",
        "nonviolent",
        "without a weapon",
        "without weapons",
        "without blood",
        "no weapons",
    ),
    "drugs": (
        "without drugs",
        "with no drugs",
        "no drugs",
        "drug-free",
        "without a syringe",
        "without pills",
    ),
}


def _mentions(prompt: str, phrases: tuple[str, ...]) -> bool:
    text = " ".join(prompt.lower().split())
    return any(re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", text) for p in phrases)


@dataclass(frozen=True)
class ResponsibleRequest:
    """What a prompt asks for: axes to balance and unsafe concepts to avoid."""

    fair_axes: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.fair_axes or self.avoid)


def read_prompt(prompt: str) -> ResponsibleRequest:
    """The responsible properties ``prompt`` asks for, e.g. "a doctor, either male or female" -> gender."""
    axes = tuple(axis for axis, phrases in FAIR_PHRASES.items() if _mentions(prompt, phrases))
    avoid = tuple(concept for concept, phrases in SAFE_PHRASES.items() if _mentions(prompt, phrases))
    return ResponsibleRequest(axes, avoid)
