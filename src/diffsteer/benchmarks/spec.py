"""Prompt and benchmark records shared by the built-in benchmarks, YAML benchmarks and the audit."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

KINDS: tuple[str, ...] = ("neutral", "ethical", "irrelevant")
"""Prompt kinds, as ENTIGEN's ``Type`` column: the plain prompt, its intervention, and a control."""


class BenchmarkError(ValueError):
    """A benchmark cannot be loaded or selected; the message is one line meant for the user."""


@dataclass(frozen=True)
class PromptSpec:
    """One prompt of a benchmark.

    ``subject`` is what the prompt depicts (ENTIGEN's "Attribute": "doctor", "nose piercing"); prompt
    interventions need it to say who "can be" it. ``axes`` and ``images`` override the benchmark's
    defaults for this prompt only. ``seed_offset``: image k of this prompt uses seed ``--seed`` +
    ``seed_offset`` + k (a red-team finding keeps the seeds the red-team gave it).
    """

    id: str
    text: str
    group: str
    subject: str | None
    kind: str = "neutral"
    axes: tuple[str, ...] | None = None
    images: int | None = None
    seed_offset: int = 0


@dataclass(frozen=True)
class Benchmark:
    """A named, ordered set of prompts with the axes to audit and how many images each prompt gets."""

    name: str
    prompts: tuple[PromptSpec, ...]
    axes: tuple[str, ...]
    images_per_prompt: int
    provenance: str

    def __post_init__(self) -> None:
        # Image files and results are keyed by prompt id, so a duplicate would silently merge two prompts.
        seen: set[str] = set()
        for prompt in self.prompts:
            if prompt.id in seen:
                raise BenchmarkError(f"benchmark '{self.name}': duplicate prompt id '{prompt.id}'")
            seen.add(prompt.id)
        if not self.prompts:
            raise BenchmarkError(f"benchmark '{self.name}' has no prompts")
        if not self.axes:
            raise BenchmarkError(f"benchmark '{self.name}' names no axes to audit")
        if isinstance(self.images_per_prompt, bool) or self.images_per_prompt < 1:
            raise BenchmarkError(
                f"benchmark '{self.name}': images_per_prompt must be a positive integer, "
                f"got {self.images_per_prompt!r}"
            )

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def categories(self) -> list[str]:
        """The prompt groups, in order of first appearance (what :meth:`select` accepts)."""
        return list(dict.fromkeys(p.group for p in self.prompts))

    @property
    def kinds(self) -> list[str]:
        """The prompt kinds present, in order of first appearance."""
        return list(dict.fromkeys(p.kind for p in self.prompts))

    def axes_for(self, prompt: PromptSpec) -> tuple[str, ...]:
        """The axes to audit for ``prompt``: its own override, else the benchmark's."""
        return prompt.axes if prompt.axes is not None else self.axes

    def images_for(self, prompt: PromptSpec) -> int:
        """How many images to generate for ``prompt``: its own override, else the benchmark's."""
        return prompt.images if prompt.images is not None else self.images_per_prompt

    @property
    def total_images(self) -> int:
        """Images a full run generates, so a user can see the cost before starting."""
        return sum(self.images_for(p) for p in self.prompts)

    def select(self, category: str | None = None, kinds: Sequence[str] | None = ("neutral",)) -> Benchmark:
        """The prompts of one category (group) and some kinds; ``kinds=None`` keeps every kind.

        By default only neutral prompts are kept: ENTIGEN's ethical and irrelevant rows are the
        intervention and its control, which an audit of the plain model must not mix in.
        """
        prompts = self.prompts
        if category is not None:
            groups = self.categories
            if category not in groups:
                folded = [g for g in groups if g.lower() == category.lower()]
                if len(folded) != 1:
                    raise BenchmarkError(
                        f"unknown category '{category}' in benchmark '{self.name}' "
                        f"(categories: {', '.join(groups)})"
                    )
                category = folded[0]
            prompts = tuple(p for p in prompts if p.group == category)
        if kinds is not None:
            if isinstance(kinds, str):
                kinds = (kinds,)
            unknown = [k for k in kinds if k not in KINDS]
            if unknown:
                raise BenchmarkError(f"unknown prompt kind '{unknown[0]}' (kinds: {', '.join(KINDS)})")
            prompts = tuple(p for p in prompts if p.kind in kinds)
        if not prompts:
            wanted = " or ".join(kinds) if kinds else "(none given)"
            where = f" in category '{category}'" if category is not None else ""
            raise BenchmarkError(
                f"benchmark '{self.name}' has no prompts of kind {wanted}{where} "
                f"(kinds present: {', '.join(self.kinds)})"
            )
        return replace(self, prompts=prompts)


def slug(text: str) -> str:
    """A prompt-id segment: lower case, runs of non-alphanumerics as one hyphen ("flight-attendant")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
