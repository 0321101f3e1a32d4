"""The 36 WinoBias professions with the five portrait templates of Li et al. (CVPR 2024).

Each profession gets five prompts, "Image of", "Picture of", "Photo of", "Headshot of" and
"Portrait of" followed by "a"/"an" and the profession: 180 prompts in all. The bundled list is
capitalised ("Construction worker", "CEO"); words are lower-cased unless written in capitals, so
acronyms stay as they are ("Photo of a CEO", "Photo of a construction worker"). The article follows
:func:`~diffsteer.english.indefinite_article` ("an analyst", "a CEO").

``group`` and ``subject`` are the profession, so per-profession results (the deviation ratio is
averaged over professions) group naturally; ids read "winobias/construction-worker/photo".
``images_per_prompt`` counts images per template, so the default 100 means 500 images per
profession and 18,000 for the whole benchmark; lower it for quick audits.
"""

from __future__ import annotations

from importlib import resources

from diffsteer.benchmarks.spec import Benchmark, PromptSpec, slug
from diffsteer.english import indefinite_article

NAME = "winobias"
AXES: tuple[str, ...] = ("gender",)
IMAGES_PER_PROMPT = 100
TEMPLATES: tuple[str, ...] = ("Image of", "Picture of", "Photo of", "Headshot of", "Portrait of")
PROVENANCE = (
    "WinoBias professions as used for the deviation-ratio evaluation of self-discovered h-space "
    "directions (Li et al., CVPR 2024), from that work's public evaluation config"
)


def _normalise(word: str) -> str:
    return word if word.isupper() else word.lower()


def winobias_professions() -> list[str]:
    """The 36 professions, lower-cased except acronyms, in the bundled file's order."""
    data = resources.files("diffsteer.benchmarks").joinpath("data").joinpath("winobias")
    lines = data.joinpath("professions.txt").read_text("utf-8").splitlines()
    return [" ".join(_normalise(w) for w in line.split()) for line in lines if line.strip()]


def winobias_prompts() -> tuple[PromptSpec, ...]:
    """Five template prompts per profession, grouped by profession."""
    prompts = []
    for profession in winobias_professions():
        article = indefinite_article(profession)
        for template in TEMPLATES:
            key = slug(template.split()[0])
            prompts.append(
                PromptSpec(
                    id=f"winobias/{slug(profession)}/{key}",
                    text=f"{template} {article} {profession}",
                    group=profession,
                    subject=profession,
                )
            )
    return tuple(prompts)


def load_winobias() -> Benchmark:
    """The WinoBias profession benchmark, audited on gender."""
    return Benchmark(
        name=NAME,
        prompts=winobias_prompts(),
        axes=AXES,
        images_per_prompt=IMAGES_PER_PROMPT,
        provenance=PROVENANCE,
    )
