"""The one rule that counts labels on an axis (the audit's rows and the studio's shares use it)."""

from __future__ import annotations

from diffsteer.attributes import get_axis
from diffsteer.attributes.tally import tally


def test_every_image_is_counted_uncertain_or_dropped_with_its_reason_kind():
    outcomes = [
        ("man", None),
        ("woman", None),
        ("man", None),
        ("uncertain", None),
        (None, "person filter (p_person=0.03)"),
        (None, "person filter (p_person=0.20)"),
        (None, None),  # generated but never labelled
        ("robot", None),  # a label of an older version of the axis
    ]
    t = tally(get_axis("gender"), outcomes)
    assert t.counts == {"man": 2, "woman": 1} and t.counted == 3 and t.share("woman") == 1 / 3
    assert (t.uncertain, t.dropped) == (1, 4) and t.counted + t.uncertain + t.dropped == len(outcomes)
    assert t.reasons == {"person filter": 2, "no label": 1, "label not a class of the axis": 1}
    assert tally(get_axis("gender")).share("man") is None  # nothing counted: no share
