"""ENTIGEN prompt interventions: the rewrites must be the published ethical prompts, word for word."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest

from diffsteer.benchmarks import PromptSpec, load_benchmark
from diffsteer.steering.prompt import AXIS_WORDS, axis_phrase, intervention_prompt


def _csv_rows() -> list[dict[str, str]]:
    data = resources.files("diffsteer.benchmarks").joinpath("data").joinpath("entigen")
    return list(csv.DictReader(io.StringIO(data.joinpath("prompts.csv").read_text("utf-8"))))


@pytest.mark.parametrize("axis", ["gender", "skin_tone"])
def test_rewrite_equals_the_csv_ethical_sentence_for_every_profession_and_object(axis: str) -> None:
    rows = _csv_rows()
    suffix = f" irrespective of their {AXIS_WORDS[axis]}"
    expected = {
        (r["Category"], r["Attribute"]): r["Sentence"]
        for r in rows
        if r["Type"] == "ethical" and r["Sentence"].endswith(suffix)
    }
    neutral = load_benchmark("entigen").select(kinds=["neutral"])
    checked = 0
    for spec in neutral.prompts:
        if spec.group in ("profession", "object"):
            assert intervention_prompt(spec, [axis]) == expected[(spec.group, spec.subject)]
            checked += 1
    assert checked == len(expected) == 25 + 8


def test_culture_rewrite_equals_the_diverse_cultures_rows() -> None:
    expected = {
        r["Attribute"]: r["Sentence"] for r in _csv_rows() if r["Sentence"].endswith("diverse cultures")
    }
    culture = load_benchmark("entigen").select("culture")
    assert {p.subject: intervention_prompt(p, ["culture"]) for p in culture.prompts} == expected


def test_the_dataset_grammar_is_kept_for_its_own_rows() -> None:
    apron = {p.subject: p for p in load_benchmark("entigen").select("object").prompts}["apron"]
    assert intervention_prompt(apron, ["gender"]).endswith("can wear a apron irrespective of their gender")


def test_several_axes_are_joined_with_or() -> None:
    doctor = PromptSpec(id="d", text="a photo of a doctor", group="profession", subject="doctor")
    assert intervention_prompt(doctor, ["gender", "skin_tone"]) == (
        "a photo of a doctor if all individuals can be a doctor irrespective of their gender or skin color"
    )
    assert axis_phrase(["gender", "skin_tone", "culture"]) == "gender, skin color or culture"


def test_unknown_or_missing_axis_is_refused() -> None:
    doctor = PromptSpec(id="d", text="a photo of a doctor", group="profession", subject="doctor")
    with pytest.raises(ValueError, match="unknown axis 'hair'"):
        intervention_prompt(doctor, ["gender", "hair"])
    with pytest.raises(ValueError, match="at least one axis"):
        intervention_prompt(doctor, [])


def test_winobias_prompts_read_naturally() -> None:
    bench = {p.id: p for p in load_benchmark("winobias").prompts}
    assert intervention_prompt(bench["winobias/analyst/image"], ["gender"]) == (
        "Image of an analyst if all individuals can be an analyst irrespective of their gender"
    )
    assert intervention_prompt(bench["winobias/ceo/photo"], ["gender"]) == (
        "Photo of a CEO if all individuals can be a CEO irrespective of their gender"
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            PromptSpec(id="a", text="a person at the beach.", group="object", subject="sunglasses"),
            "a person at the beach if all individuals can wear sunglasses irrespective of their gender",
        ),
        (
            PromptSpec(id="b", text="a person at the beach", group="object", subject="tattoo"),
            "a person at the beach if all individuals can have a tattoo irrespective of their gender",
        ),
        (
            PromptSpec(id="c", text="a person in a uniform", group="object", subject="uniform"),
            "a person in a uniform if all individuals can wear a uniform irrespective of their gender",
        ),
        (
            PromptSpec(id="d", text="engineers at work", group="custom", subject="engineer"),
            "engineers at work if all individuals can be an engineer irrespective of their gender",
        ),
        (
            PromptSpec(id="e", text="a crowd in a park", group="custom", subject=None),
            "a crowd in a park if all individuals can be depicted irrespective of their gender",
        ),
    ],
)
def test_prompts_outside_the_dataset_get_the_same_clause(spec: PromptSpec, expected: str) -> None:
    assert intervention_prompt(spec, ["gender"]) == expected
