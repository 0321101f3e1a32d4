"""Counting labels on one axis: counted per class, uncertain, or dropped with the reason why.

The one rule every image set is counted by (the audit's rows, the studio's shares), so an image the
studio counts is an image the audit of the same choice counts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from diffsteer.attributes.axes import UNCERTAIN, Axis

__all__ = ["NOT_CLASSIFIED", "Tally", "reason_kind", "tally"]

NOT_CLASSIFIED = "not classified"


def reason_kind(reason: str | None) -> str:
    """A drop reason without its per-image detail in parentheses (e.g. the p_person of that image)."""
    return (reason or "no label").split(" (")[0]


@dataclass
class Tally:
    """Labels of an image set on one axis; ``reasons`` counts the dropped images by kind of reason."""

    axis: str
    counts: dict[str, int]
    uncertain: int = 0
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def counted(self) -> int:
        return sum(self.counts.values())

    def share(self, cls: str) -> float | None:
        """The class's share of the counted images (None when no image was counted)."""
        return self.counts.get(cls, 0) / self.counted if self.counted else None

    def add(self, label: str | None, reason: str | None = None) -> None:
        """One image: its label on the axis (None: it has none) and why it was dropped (None: it was not).

        An image is dropped when it has a reason, no label or a label that is not a class of the axis,
        uncertain when the classifier said so, and counted otherwise.
        """
        if reason is not None or label is None:
            self.dropped += 1
            kind = reason_kind(reason)
            self.reasons[kind] = self.reasons.get(kind, 0) + 1
        elif label == UNCERTAIN:
            self.uncertain += 1
        elif label in self.counts:
            self.counts[label] += 1
        else:  # a label stored under an older version of a custom axis: accounted for, not counted
            self.add(None, f"label not a class of the axis ({label})")


def tally(axis: Axis, outcomes: Iterable[tuple[str | None, str | None]] = ()) -> Tally:
    """Count ``(label, drop reason)`` pairs, one per image, on ``axis`` (see :meth:`Tally.add`)."""
    out = Tally(axis.name, dict.fromkeys(axis.classes, 0))
    for label, reason in outcomes:
        out.add(label, reason)
    return out
