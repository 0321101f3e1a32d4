"""English word forms that prompt text needs, shared by benchmarks and prompt interventions."""

from __future__ import annotations

__all__ = ["indefinite_article"]

_AN_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")
_A_EXCEPTIONS = ("uni", "use", "usu", "uti", "eu", "one", "once")


def indefinite_article(phrase: str) -> str:
    """The indefinite article ("a" or "an") for ``phrase``: by first letter, with common exceptions.

    Vowel letters take "an" ("an engineer"), except words sounding like "you"/"w" ("a uniform",
    "a European", "a one-off"); silent-h words take "an" ("an hour"). Acronyms follow the letter
    rule ("a CEO"), which is right for those in the bundled data.
    """
    word = phrase.strip().lower()
    if word.startswith(_AN_EXCEPTIONS):
        return "an"
    if word.startswith(_A_EXCEPTIONS):
        return "a"
    return "an" if word[:1] in "aeiou" and word else "a"
