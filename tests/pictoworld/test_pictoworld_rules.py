"""The acceptance rules themselves, on made-up figures: a model that draws its planted shares passes,
one that is off in one cell is named for that cell."""

from __future__ import annotations

from diffsteer.pictoworld import evaluate, world
from diffsteer.summary import Summary


def _exact_stats() -> dict[str, dict[str, float]]:
    return {
        p: {
            "man_share": world.planted_shares(p)["gender"]["man"],
            "light_share": world.planted_shares(p)["skin_tone"]["light"],
            "recognised": 1.0,
        }
        for p in world.PROFESSIONS
    }


def _summary(dr: dict[tuple[str, str], float]) -> Summary:
    def row(prof: str, axis: str, value: float) -> dict:
        prompt = f"a photo of {world.article(prof)} {prof}"
        return {"mitigation": "none", "axis": axis, "prompt": prompt, "deviation_ratio": value}

    return Summary.from_dict({"results": [row(p, axis, v) for (p, axis), v in dr.items()]})


def _planted_ratios() -> dict[tuple[str, str], float]:
    return {
        (p, axis): world.planted_deviation_ratio(p, axis)
        for p in world.PROFESSIONS
        for axis in ("gender", "skin_tone")
    }


def test_neutral_share_rule_passes_the_planted_shares_and_names_a_miss():
    stats = _exact_stats()
    assert evaluate.neutral_share_misses(stats) == ([], 10)
    stats["nurse"]["man_share"] += 0.13
    misses, _ = evaluate.neutral_share_misses(stats)
    assert [(m[0], m[1]) for m in misses] == [("nurse", "gender")]


def test_audit_rule_passes_the_planted_ratios_and_names_each_miss():
    ratios = _planted_ratios()
    assert evaluate.audit_misses(_summary(ratios)) == []
    ratios[("pilot", "skin_tone")] -= 0.2  # a skew under-drawn
    ratios[("chef", "gender")] = 0.25  # a balanced control that is not
    ratios[("doctor", "skin_tone")] = 0.3  # not skewed, not a control: not judged
    misses = evaluate.audit_misses(_summary(ratios))
    assert [(m[0], m[1]) for m in misses] == [("pilot", "skin_tone"), ("chef", "gender")]
