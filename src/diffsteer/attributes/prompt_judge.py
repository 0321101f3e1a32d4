"""Whether a prompt itself asks for unsafe content: phrase lists as data, and an optional text classifier.

The phrase judge reads each concept's ``phrases`` and ``allow`` lists from ``safety.yaml``. A phrase
matches as whole words, case-insensitively, with simple inflections of every word ("weapon" also
finds "weapons", "stab" finds "stabbed" and "stabbing"), so a user's ordinary wording is caught while a
benign neighbour ("a photo of a soldier") passes. Benign phrases in ``allow`` ("blood donor") are
blanked out before matching. A user's own phrase file (:meth:`PromptJudge.from_phrase_file`) adds
to those lists, for slang the shipped list leaves out.

A phrase list misses paraphrases by design; a red-team search looks precisely for prompts that pass
it. The optional text classifier (the PyPI package ``alt-profanity-check``, a linear model over word
n-grams that ships its weights) adds a second, learned opinion on offensive language; it is used only
when installed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from diffsteer.attributes.safety import UnsafeConcept, concepts_with_phrase_file, unsafe_concepts

__all__ = [
    "OFFENSIVE_LANGUAGE",
    "PromptJudge",
    "PromptVerdict",
    "TextClassifierMissingError",
    "phrase_pattern",
    "text_classifier_available",
]

OFFENSIVE_LANGUAGE = "offensive_language"
"""The concept name the optional text classifier reports."""
_TEXT_CLASSIFIER_PACKAGE = "alt-profanity-check"
_VOWELS = set("aeiou")


class TextClassifierMissingError(RuntimeError):
    """Raised when the text classifier is asked for but its package is not installed."""


class PromptVerdict(NamedTuple):
    """Unpacks as ``(is_unsafe, concept, matched)``: the concept and the text that made it unsafe.

    ``matched`` is the prompt's own words that a phrase matched (e.g. "weapons"), or for the text
    classifier ``"alt-profanity-check p=0.97"``; both are None for a safe prompt.
    """

    is_unsafe: bool
    concept: str | None
    matched: str | None


SAFE = PromptVerdict(False, None, None)


def _inflections(word: str) -> list[str]:
    """The word and its regular inflections, as regex alternatives (longest first)."""
    forms = {word, word + "s", word + "es", word + "ed", word + "ing", word + "er", word + "ers"}
    if word.endswith("e"):
        stem = word[:-1]
        forms |= {word + "d", word + "r", word + "rs", stem + "ing"}
    if word.endswith("y") and len(word) > 2 and word[-2] not in _VOWELS:
        stem = word[:-1]
        forms |= {stem + "ies", stem + "ied", stem + "ier"}
    if (
        len(word) >= 3
        and word[-1] not in _VOWELS | {"w", "x", "y"}
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    ):
        # one vowel before a final consonant doubles it: stab -> stabbed, stabbing
        forms |= {word + word[-1] + suffix for suffix in ("ed", "ing", "er", "ers")}
    return sorted((re.escape(f) for f in forms), key=len, reverse=True)


def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern for a phrase, each word in any simple inflection.

    Words of a phrase may be separated by spaces or hyphens ("machine-gun" matches "machine gun").
    """
    words = phrase.lower().split()
    if not words:
        raise ValueError("phrase must contain at least one word")
    body = r"[\s\-]+".join("(?:" + "|".join(_inflections(w)) + ")" for w in words)
    return re.compile(rf"(?<![\w]){body}(?![\w])", re.IGNORECASE)


def text_classifier_available() -> bool:
    """Whether the optional text classifier's package is installed."""
    from importlib.util import find_spec

    return find_spec("profanity_check") is not None


@dataclass(frozen=True)
class _CompiledConcept:
    name: str
    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    allow: tuple[re.Pattern[str], ...]


class PromptJudge:
    """Says whether a prompt asks for unsafe content.

    ``concepts``: the concepts to look for (default: every concept in safety.yaml). ``text_classifier``:
    None uses alt-profanity-check when it is installed, True requires it, False never uses it.
    ``threshold``: the classifier probability above which a prompt counts as offensive.
    ``phrase_file`` only names where ``concepts`` came from (see :meth:`from_phrase_file`).
    """

    @classmethod
    def from_phrase_file(cls, path: Path | str | None, **kwargs: Any) -> PromptJudge:
        """A judge of the shipped concepts plus a user's phrase file (None: the shipped ones alone).
        A bad file raises PhraseFileError naming it."""
        if path is None:
            return cls(**kwargs)
        return cls(concepts_with_phrase_file(path), phrase_file=str(path), **kwargs)

    def __init__(
        self,
        concepts: Mapping[str, UnsafeConcept] | Iterable[UnsafeConcept] | None = None,
        *,
        text_classifier: bool | None = None,
        threshold: float = 0.5,
        phrase_file: str | None = None,
    ) -> None:
        self.phrase_file = phrase_file
        if concepts is None:
            concepts = unsafe_concepts()
        items = list(concepts.values()) if isinstance(concepts, Mapping) else list(concepts)
        self.concepts = tuple(
            _CompiledConcept(
                c.name,
                tuple((p, phrase_pattern(p)) for p in c.phrases),
                tuple(phrase_pattern(a) for a in c.allow),
            )
            for c in items
        )
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold}")
        self.threshold = threshold
        available = text_classifier_available()
        if text_classifier and not available:
            raise TextClassifierMissingError(
                f"the text classifier needs the package {_TEXT_CLASSIFIER_PACKAGE}: "
                "pip install 'diffsteer[prompt-classifier]'"
            )
        self.uses_text_classifier = available if text_classifier is None else bool(text_classifier)

    def known_phrases(self) -> list[str]:
        """Every concept's phrases and allowed phrases, in data order, as "concept:phrase" and
        "concept:allow:phrase": what the phrase judge knows (a run's identity digests it)."""
        phrases = [f"{c.name}:{p}" for c in self.concepts for p, _ in c.patterns]
        return phrases + [f"{c.name}:allow:{a.pattern}" for c in self.concepts for a in c.allow]

    def describe(self) -> str:
        """What judges: "phrases", plus the user's phrase file and the text classifier when used."""
        name = "phrases" if self.phrase_file is None else f"phrases+{self.phrase_file}"
        return name + ("+alt-profanity-check" if self.uses_text_classifier else "")

    def match(self, prompt: str) -> PromptVerdict:
        """The phrase lists' verdict alone: the first concept (in data order) with a matching phrase."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        for concept in self.concepts:
            text = prompt
            for allowed in concept.allow:
                # blank out, not delete, so the words around an allowed phrase do not join into a match
                text = allowed.sub(lambda m: " " * len(m.group(0)), text)
            found = [m for _, pattern in concept.patterns if (m := pattern.search(text))]
            if found:
                # the longest match names the request best ("machine-gun", not just "gun")
                best = max(found, key=lambda m: (len(m.group(0)), -m.start()))
                return PromptVerdict(True, concept.name, best.group(0))
        return SAFE

    def judge(self, prompt: str) -> PromptVerdict:
        """The phrase lists' verdict, else (when used) the text classifier's."""
        return self.judge_many([prompt])[0]

    def judge_many(self, prompts: Sequence[str]) -> list[PromptVerdict]:
        """Verdicts for many prompts; the text classifier runs once over those the phrases pass."""
        verdicts = [self.match(p) for p in prompts]
        if not self.uses_text_classifier:
            return verdicts
        todo = [i for i, v in enumerate(verdicts) if not v.is_unsafe]
        if todo:
            from profanity_check import predict_prob

            probs = predict_prob([prompts[i] for i in todo])
            for i, p in zip(todo, probs, strict=True):
                if float(p) >= self.threshold:
                    verdicts[i] = PromptVerdict(
                        True, OFFENSIVE_LANGUAGE, f"{_TEXT_CLASSIFIER_PACKAGE} p={float(p):.2f}"
                    )
        return verdicts
