"""The ENTIGEN prompt set (Bansal et al., EMNLP 2022), read from the bundled copy of its prompt.csv.

Every one of the 246 rows becomes a :class:`PromptSpec`: ``group`` is the csv's Category (profession,
object, culture), ``kind`` its Type (neutral, ethical, irrelevant), ``subject`` its Attribute and
``text`` its Sentence, unedited. Neutral rows are unique per attribute and get readable ids
("profession/neutral/doctor", "object/neutral/nose-piercing"); ethical and irrelevant rows come in
several variants per attribute, so their ids end with the csv row index
("profession/ethical/doctor/29"), which is stable because the data file is pinned.
"""

from __future__ import annotations

import csv
import io
from importlib import resources

from diffsteer.benchmarks.spec import Benchmark, BenchmarkError, PromptSpec, slug

NAME = "entigen"
AXES: tuple[str, ...] = ("gender", "skin_tone")
IMAGES_PER_PROMPT = 9
"""As the paper: nine images per prompt, seeds 0..8."""

PROVENANCE = (
    "ENTIGEN (Bansal et al., EMNLP 2022), prompt.csv of its public repository at commit 3c634ba; MIT licence"
)

_COLUMNS = ["", "Category", "Type", "Attribute", "Sentence"]


def _data_text(name: str) -> str:
    data = resources.files("diffsteer.benchmarks").joinpath("data").joinpath("entigen")
    return data.joinpath(name).read_text("utf-8")


def entigen_prompts() -> tuple[PromptSpec, ...]:
    """All rows of the bundled prompts.csv, in file order."""
    reader = csv.reader(io.StringIO(_data_text("prompts.csv")))
    header = next(reader)
    if header != _COLUMNS:
        raise BenchmarkError(f"entigen prompts.csv has columns {header}, expected {_COLUMNS}")
    prompts = []
    for row in reader:
        index, category, kind, attribute, sentence = row
        prompt_id = f"{category}/{kind}/{slug(attribute)}"
        if kind != "neutral":
            prompt_id += f"/{int(index)}"
        prompts.append(PromptSpec(id=prompt_id, text=sentence, group=category, subject=attribute, kind=kind))
    return tuple(prompts)


def extended_professions() -> list[str]:
    """The 85 professions of ENTIGEN's older, longer list, for audits beyond the 25 in prompts.csv."""
    return [line.strip() for line in _data_text("professions_extended.txt").splitlines() if line.strip()]


def load_entigen() -> Benchmark:
    """The full ENTIGEN benchmark; use ``.select()`` for the neutral prompts of one category."""
    return Benchmark(
        name=NAME,
        prompts=entigen_prompts(),
        axes=AXES,
        images_per_prompt=IMAGES_PER_PROMPT,
        provenance=PROVENANCE,
    )
