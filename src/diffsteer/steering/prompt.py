"""ENTIGEN's ethical interventions: rewrite a prompt to say anyone can be (or wear) its subject.

The phrasing follows the ENTIGEN prompt set (Bansal et al., EMNLP 2022), so for every neutral
profession and object row of the bundled prompts.csv the rewrite for axis ``gender`` or
``skin_tone`` is exactly the csv's "... irrespective of their gender / skin color" sentence:

- profession (and any other prompt with a subject):
  "{text} if all individuals can be a {subject} irrespective of their {axis words}"
- object: "{text} if all individuals can wear a {subject} irrespective of their {axis words}";
  "have" where the prompt says "with" ("with a nose piercing"), and the article as the prompt has it
- culture: "{text} from diverse cultures" (the csv's other variant says "different cultures")
- no subject: "{text} if all individuals can be depicted irrespective of their {axis words}"

Articles are copied from the prompt text where it puts one before the subject, so the dataset's own
rows are reproduced verbatim, including its "wear a apron" and "wear a makeup": an intervention must
match the published prompts for results to be comparable with the paper, and it repeats the neutral
prompt's own wording rather than correcting half of it. Where the text has no article before the
subject, "a"/"an" is chosen by :func:`~diffsteer.english.indefinite_article`, and none for
plural or mass nouns ("wear eye glasses", "wear makeup").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from diffsteer.english import indefinite_article


class InterventionTarget(Protocol):
    """What an intervention reads of a benchmark prompt (a ``benchmarks.spec.PromptSpec`` has it)."""

    text: str
    subject: str | None
    group: str


AXIS_WORDS: Mapping[str, str] = MappingProxyType(
    {"gender": "gender", "skin_tone": "skin color", "culture": "culture", "race": "race", "age": "age"}
)
"""How each axis is named inside an intervention sentence."""

_HAVE_NOUNS = ("piercing", "tattoo", "beard", "moustache", "mustache")
_MASS_NOUNS = ("makeup", "make-up", "jewelry", "jewellery", "clothing", "lipstick", "perfume")
_OBJECT_VERBS = {"wearing": "wear", "wears": "wear", "in": "wear", "with": "have", "has": "have"}


def axis_phrase(axes: Sequence[str]) -> str:
    """The axis words of ``axes`` joined as a sentence would: "gender", "gender or skin color"."""
    if isinstance(axes, str):
        axes = (axes,)
    if not axes:
        raise ValueError("an intervention needs at least one axis")
    unknown = [axis for axis in axes if axis not in AXIS_WORDS]
    if unknown:
        raise ValueError(
            f"unknown axis '{unknown[0]}' for a prompt intervention (known: {', '.join(AXIS_WORDS)})"
        )
    words = list(dict.fromkeys(AXIS_WORDS[axis] for axis in axes))
    if len(words) == 1:
        return words[0]
    return f"{', '.join(words[:-1])} or {words[-1]}"


def _uncountable(subject: str) -> bool:
    """Plural ("eye glasses") or mass ("makeup") nouns, which take no indefinite article."""
    last = subject.lower().split()[-1]
    return subject.lower() in _MASS_NOUNS or (last.endswith("s") and not last.endswith("ss"))


def _article_phrase(subject: str, article: str | None) -> str:
    if article:
        return f"{article.lower()} {subject}"
    if _uncountable(subject):
        return subject
    return f"{indefinite_article(subject)} {subject}"


def _profession_phrase(text: str, subject: str) -> str:
    """The subject with the article the prompt gives it ("a doctor"), else the usual one."""
    matches = list(re.finditer(rf"\b(an?)\s+{re.escape(subject)}\b", text, flags=re.IGNORECASE))
    return _article_phrase(subject, matches[-1].group(1) if matches else None)


def _object_phrase(text: str, subject: str) -> str:
    """Verb, article and subject as the prompt words them: "wear a suit", "have a nose piercing"."""
    verbs = "|".join(_OBJECT_VERBS)
    pattern = rf"\b({verbs})\s+(?:(an?|the|some)\s+)?{re.escape(subject)}\b"
    matches = list(re.finditer(pattern, text, flags=re.IGNORECASE))
    if matches:
        verb = _OBJECT_VERBS[matches[-1].group(1).lower()]
        article = matches[-1].group(2)
        if article is not None:
            return f"{verb} {article.lower()} {subject}"
        return f"{verb} {subject}"
    verb = "have" if subject.lower().split()[-1] in _HAVE_NOUNS else "wear"
    return f"{verb} {_article_phrase(subject, None)}"


def intervention_prompt(spec: InterventionTarget, axes: Sequence[str]) -> str:
    """``spec.text`` with ENTIGEN's ethical clause for ``axes`` appended.

    The text is used as given (a trailing full stop is dropped so the clause reads on); apply it to
    neutral prompts, since an ethical or irrelevant prompt already carries a clause.
    """
    words = axis_phrase(axes)
    text = spec.text.strip().rstrip(".").rstrip()
    subject = spec.subject.strip() if spec.subject else None
    if spec.group == "culture":
        return f"{text} from diverse cultures"
    if not subject:
        return f"{text} if all individuals can be depicted irrespective of their {words}"
    if spec.group == "object":
        return f"{text} if all individuals can {_object_phrase(text, subject)} irrespective of their {words}"
    return (
        f"{text} if all individuals can be {_profession_phrase(text, subject)} irrespective of their {words}"
    )
