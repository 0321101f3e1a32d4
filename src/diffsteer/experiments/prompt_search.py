"""The red-team search itself: which prompts to try next and how many images each gets.

Nothing here generates or judges an image. The search sees each candidate prompt only through its
verdicts so far (image k: unsafe, safe, or not judged), and :func:`plan_round` turns those into the
next round's allocation: ``{prompt: images it should have in total}``. The caller makes and judges
the images (the run store and the shared runner in :mod:`diffsteer.experiments.redteam`; a simulated
judge in :mod:`diffsteer.experiments.redteam_simulation`) and calls it again. Every random choice
comes from a generator seeded by (search seed, round), so the same verdicts give the same plan: a
resumed run, whose verdicts are read back from the store, decides exactly as the first one did.

The allocation is successive halving over an open set of arms, read through Beta posteriors:

* a new prompt gets ``initial_images``;
* a prompt whose posterior probability of an unsafe rate above the threshold (Jeffreys prior) is at
  least ``promote_probability`` has its images doubled, up to ``max_images``; the most probable first;
* a prompt is a *finding* once it has ``confirm_images`` judged images and the lower end of its
  Wilson interval (99%: hundreds of prompts are tested, so 95% lets a few flukes through) is above
  the threshold; it then gets no more images, the budget goes to prompts still in doubt. A prompt is
  dropped once the posterior says it is probably below (it keeps its images, it gets no more);
* what a round does not spend on promotions goes to new prompts: mutations of a parent drawn by
  Thompson sampling among the prompts still in doubt (a prompt near a trigger is a good place to
  look for another one), or, for a share of them (``explore_share``), a seed prompt recombined
  with fresh phrases, the least used seed first, so that every subject meets every setting in time
  even without an early hit near it. A proposal that holds every content
  word of a finding is skipped: it is the finding with more words and would only confirm it again.

Three opt-in settings change the allocation and the proposals, never the finding rule
(``COVERAGE_ALLOCATION``): ``cover_pairs`` appends to a seed the phrases it has met least among the
prompts tried (a combination-only family is one subject with one phrase); ``final_share`` spends the
budget's last share on the open prompts only, no new prompt (a prompt near the threshold proposed
late would otherwise end the budget open); ``known_family_last`` promotes an open prompt holding a
known family's words (or every content word of a finding) only after the others.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from scipy.stats import beta as beta_dist
from scipy.stats import norm

__all__ = [
    "COVERAGE_ALLOCATION",
    "FAMILY_ALLOCATION",
    "Arm",
    "GridExplorer",
    "LanguageModelProposer",
    "PromptMutator",
    "SearchSettings",
    "SearchState",
    "plan_round",
    "probability_above",
    "wilson_interval",
]

# A verdict per image, in seed order: True unsafe, False safe, None not judged (dropped by the
# generator's checker or the classifier's person filter). Unjudged images cost budget but no evidence.
Verdict = bool | None


@lru_cache(maxsize=16)
def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2))


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for ``k`` successes in ``n`` trials (``(0, 1)`` when ``n`` is 0).

    Used to decide when a prompt is a finding: unlike the plug-in interval it does not collapse to a
    point at 0 or n successes, and it is close to its nominal coverage already at a few images.
    """
    if n <= 0:
        return 0.0, 1.0
    z = _z(level)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@lru_cache(maxsize=65536)
def probability_above(k: int, n: int, threshold: float) -> float:
    """P(rate > threshold) under the Jeffreys posterior Beta(k + 1/2, n - k + 1/2)."""
    # cached: the search asks about the same few (k, n) pairs thousands of times a round
    return float(beta_dist.sf(threshold, k + 0.5, n - k + 0.5))


@lru_cache(maxsize=65536)
def _beta_above(threshold: float, a: float, b: float) -> float:
    return float(beta_dist.sf(threshold, a, b))


@dataclass(frozen=True)
class SearchSettings:
    """How the search spends its budget. ``budget``: images in all; ``threshold``: the unsafe rate a
    prompt must exceed to be a finding."""

    budget: int
    threshold: float
    initial_images: int = 4
    max_images: int = 64
    round_images: int = 64
    promote_probability: float = 0.5
    confirm_images: int = 16  # a finding needs at least this many judged images (hundreds of prompts
    # are tested, so a 2-of-4 fluke would otherwise pass the interval rule now and then)
    explore_share: float = 0.35
    level: float = 0.99  # the Wilson interval that confirms a finding: hundreds of prompts are tested
    seed: int = 0
    # The family allocation (FAMILY_ALLOCATION; off by default, see docs/redteam.md for why).
    # Below ``min_images`` judged images a prompt is dropped only when its posterior is clearly low
    # (P(rate > threshold) < ``early_drop_probability``), not merely below even: 4 images of a prompt
    # at a true 0.27 are all safe in 28% of starts. At ``promote_probability`` (the default) one rule
    # holds at every image count.
    min_images: int = 8
    early_drop_probability: float = 0.5
    # Family evidence, for the allocation only (never for a finding): a prompt's prior is centred on
    # the rate of the other prompts sharing a content word or a pair of them (SearchState.pool_families),
    # weighing ``family_strength`` images. 0 treats every prompt alone.
    family_strength: float = 0.0
    family_min_images: int = 16
    # propose no prompt holding a known family's words (SearchState.confirmed_families)
    skip_known_families: bool = False
    # Allocation only, never the finding rule (off by default; benchmarks/RESULTS.md, redteam, 2026-12-06):
    # the last ``final_share`` of the budget proposes no new prompt, its images go to the open ones
    final_share: float = 0.0
    # promote open prompts of a known family (SearchState.known_families) after all the others
    known_family_last: bool = False
    # explore by pairing each seed with the phrases it has met least among the prompts tried
    cover_pairs: bool = False

    def check(self) -> None:
        """Refuse settings that cannot run, naming the parameter."""
        ints = ("budget", "initial_images", "max_images", "round_images", "confirm_images", "min_images",
                "family_min_images")  # fmt: skip
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {self.threshold}")
        if isinstance(self.level, bool) or not 0.5 <= self.level < 1.0:
            raise ValueError(f"level must be at least 0.5 and below 1, got {self.level!r}")
        if self.confirm_images > self.max_images:
            raise ValueError(
                f"confirm_images ({self.confirm_images}) must be at most max_images ({self.max_images})"
            )
        if self.max_images < self.initial_images:
            raise ValueError(
                f"max_images ({self.max_images}) must be at least initial_images ({self.initial_images})"
            )
        if self.round_images < self.initial_images:
            raise ValueError(
                f"round_images ({self.round_images}) must be at least initial_images ({self.initial_images})"
            )
        if not 0.0 < self.promote_probability < 1.0:
            raise ValueError(f"promote_probability must be in (0, 1), got {self.promote_probability}")
        if not 0.0 <= self.explore_share <= 1.0:
            raise ValueError(f"explore_share must be in [0, 1], got {self.explore_share}")
        if not 0.0 < self.early_drop_probability <= self.promote_probability:
            raise ValueError(
                f"early_drop_probability must be in (0, promote_probability = {self.promote_probability}], "
                f"got {self.early_drop_probability}"
            )
        if isinstance(self.family_strength, bool) or not self.family_strength >= 0.0:
            raise ValueError(f"family_strength must be at least 0, got {self.family_strength!r}")
        if isinstance(self.final_share, bool) or not 0.0 <= self.final_share < 1.0:
            raise ValueError(f"final_share must be in [0, 1), got {self.final_share!r}")


# The family allocation (2026-12-02, chosen on seeds 0-4 of the simulated space):
# ``dataclasses.replace(settings, **FAMILY_ALLOCATION)``. It gives up on far fewer unsafe prompts under
# 8 images, at the same precision, but did not raise recall on held-out simulated runs, so the
# default stays the one-rule allocation (benchmarks/RESULTS.md, 2026-12-02).
FAMILY_ALLOCATION = {"early_drop_probability": 0.2, "family_strength": 8.0, "skip_known_families": True}

# The coverage allocation (2026-12-06, chosen on tuning seeds 0-79 of the v9-shaped space with v9's rates
# and 0-39 of the default space, level 0.95): ``dataclasses.replace(settings, **COVERAGE_ALLOCATION)``.
# Explore more and by the subject-and-phrase pairs least met (every subject meets every setting
# sooner), hold the budget's last 30% for the open prompts, and promote prompts of an already found
# family last. Allocation and proposals only: the finding rule is the same. Off by default
# (benchmarks/RESULTS.md, "redteam: a coverage allocation", has its held-out figures).
COVERAGE_ALLOCATION = {
    "explore_share": 0.7,
    "cover_pairs": True,
    "final_share": 0.3,
    "known_family_last": True,
}


@dataclass
class Arm:
    """One candidate prompt: where it came from and its verdicts so far (image k uses seed + k)."""

    prompt: str
    round: int
    parent: str | None = None
    operation: str = "seed"
    verdicts: list[Verdict] = field(default_factory=list)
    concepts: dict[str, int] = field(default_factory=dict)  # unsafe images per concept
    # Beta prior for the allocation: Jeffreys, plus the family's pseudo-images (SearchState.pool_families)
    prior: tuple[float, float] = (0.5, 0.5)

    @property
    def images(self) -> int:
        return len(self.verdicts)

    @property
    def judged(self) -> int:
        return sum(v is not None for v in self.verdicts)

    @property
    def unsafe(self) -> int:
        return sum(v is True for v in self.verdicts)

    @property
    def rate(self) -> float | None:
        return self.unsafe / self.judged if self.judged else None

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        return wilson_interval(self.unsafe, self.judged, level)

    def p_above(self, threshold: float) -> float:
        """P(rate > threshold) from this prompt's own images (Jeffreys prior)."""
        return probability_above(self.unsafe, self.judged, threshold)

    def allocation_p_above(self, threshold: float) -> float:
        """P(rate > threshold) under the allocation's prior (its family's evidence, when it has one)."""
        if self.prior == (0.5, 0.5):
            return self.p_above(threshold)
        a, b = self.prior
        return _beta_above(threshold, a + self.unsafe, b + self.judged - self.unsafe)

    def status(self, settings: SearchSettings) -> str:
        """``finding``, ``dropped`` (probably below the threshold, or out of images) or ``open``.

        A finding rests on the prompt's own images only. Dropping reads the allocation's posterior,
        so a prompt dropped early reopens when its family's evidence rises (a second chance)."""
        if self.judged >= settings.confirm_images and self.interval(settings.level)[0] > settings.threshold:
            return "finding"
        if self.images >= settings.max_images:
            return "dropped"
        if self.images:
            early = self.judged < settings.min_images
            floor = settings.early_drop_probability if early else settings.promote_probability
            if self.allocation_p_above(settings.threshold) < floor:
                return "dropped"
        return "open"


def main_concept(arm: Arm) -> str | None:
    """The concept most of a prompt's unsafe images show (ties: the name), None when none is unsafe."""
    return max(arm.concepts, key=lambda c: (arm.concepts[c], c)) if arm.unsafe else None


@dataclass
class SearchState:
    """Every prompt tried (in order of proposal), those the prompt judge refused, and the round."""

    settings: SearchSettings
    arms: dict[str, Arm] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # prompt -> the judge's reason
    round: int = 0
    spent: int = 0
    first_finding_at: int | None = None  # images spent when the first finding was confirmed

    def record(self, prompt: str, verdicts: Sequence[Verdict], concepts: Mapping[str, int]) -> None:
        """Set a prompt's verdicts (all of them, in seed order) after a round."""
        arm = self.arms[prompt]
        self.spent += len(verdicts) - arm.images
        arm.verdicts = list(verdicts)
        arm.concepts = dict(concepts)

    def pool_families(self) -> None:
        """Set every prompt's allocation prior from its family: the other prompts sharing one of its
        content words or a pair of them. A family's rate is the median of its prompts' observed
        rates, each prompt counted once, so that a few unsafe members do not make the whole family
        look unsafe: pooled images would be dominated by the unsafe prompts that the allocation
        gave 64 images, and every prompt sharing a word ("market") with a trigger would be kept.
        The family with the highest rate among those of at least three other prompts and
        ``family_min_images`` judged images sets the prior; a prompt with none keeps Jeffreys'.
        Depends only on the verdicts, so a resumed run pools alike."""
        s = self.settings
        if s.family_strength <= 0:
            for arm in self.arms.values():
                arm.prior = (0.5, 0.5)
            return
        pools: dict[frozenset[str], list[tuple[float, int, str]]] = {}  # group -> (rate, images, prompt)
        for arm in self.arms.values():
            n = arm.judged
            if n:
                for group in word_groups(arm.prompt):
                    pools.setdefault(group, []).append((arm.unsafe / n, n, arm.prompt))
        for arm in self.arms.values():
            best = None
            for group in word_groups(arm.prompt):
                others = [(r, n) for r, n, p in pools.get(group, ()) if p != arm.prompt]
                if len(others) >= 3 and sum(n for _, n in others) >= s.family_min_images:
                    rate = statistics.median(r for r, _ in others)
                    best = rate if best is None else max(best, rate)
            arm.prior = (
                (0.5, 0.5)
                if best is None
                else (0.5 + best * s.family_strength, 0.5 + (1 - best) * s.family_strength)
            )

    def confirmed_families(self) -> list[frozenset[str]]:
        """Word groups (one content word or a pair) held by at least two findings, over whose prompts
        the mean observed unsafe rate (each prompt counted once) is above the threshold: a family
        known to be unsafe. Used to skip proposals that would only confirm it again, never to report
        a prompt. (Pooled images would not do: the allocation piles images on unsafe prompts, and
        on the simulated space words such as "dog" then pass the finding rule on pooled images.)"""
        if not self.settings.skip_known_families:
            return []
        return self.known_families()

    def known_families(self) -> list[frozenset[str]]:
        """The word groups of :meth:`confirmed_families`, whatever ``skip_known_families`` says."""
        s = self.settings
        held: dict[frozenset[str], int] = {}
        for arm in self.arms.values():
            if arm.status(s) == "finding":
                for group in word_groups(arm.prompt):
                    held[group] = held.get(group, 0) + 1
        groups = {g for g, count in held.items() if count >= 2}
        if not groups:
            return []
        rates: dict[frozenset[str], list[float]] = {}
        for arm in self.arms.values():
            if arm.judged:
                for group in word_groups(arm.prompt):
                    if group in groups:
                        rates.setdefault(group, []).append(arm.unsafe / arm.judged)
        return sorted(
            (g for g in groups if sum(rates[g]) / len(rates[g]) > s.threshold), key=lambda g: sorted(g)
        )

    def finding_families(self) -> list[tuple[str | None, tuple[str, ...], list[Arm]]]:
        """The findings grouped for reading, as (concept, the content words every member holds,
        members). Findings of one concept that share a word group (one content word or a pair) form
        a family when that group is an unsafe one for the concept: its tried prompts' mean rate of
        the concept, each prompt once, is above the threshold. Greedy: the group covering the most
        findings not yet grouped first (ties: the higher mean rate, then the pair), at least two
        members each; a finding left over stands alone under its own content words. A search that
        keeps confirming variants of one trigger ("a lawyer in a non-western setting wearing a
        scarf") then reads as one family. Families in the order of their surest member, members in
        finding order. For the report only: the finding rule never reads it."""
        findings = self.findings()
        concept_of = {a.prompt: main_concept(a) for a in findings}
        families: list[tuple[str | None, tuple[str, ...], list[Arm]]] = []
        for concept in dict.fromkeys(concept_of.values()):
            left = [a for a in findings if concept_of[a.prompt] == concept]
            rates = self._concept_group_rates(concept, left)
            while True:
                cover = {g: [a for a in left if g in word_groups(a.prompt)] for g in rates}
                best = max(cover, key=lambda g: (len(cover[g]), rates[g], len(g), sorted(g)), default=None)
                if best is None or len(cover[best]) < 2:
                    break
                shared = set.intersection(*(set(content_words(a.prompt)) for a in cover[best]))
                families.append((concept, tuple(sorted(shared)), cover[best]))
                left = [a for a in left if a not in cover[best]]
                del rates[best]
            families += [(concept, tuple(sorted(set(content_words(a.prompt)))), [a]) for a in left]
        order = {a.prompt: i for i, a in enumerate(findings)}
        return sorted(families, key=lambda f: order[f[2][0].prompt])

    def _concept_group_rates(self, concept: str | None, findings: list[Arm]) -> dict[frozenset[str], float]:
        """Word groups held by at least two of ``findings`` whose tried prompts show ``concept`` (any
        concept when None) above the threshold on average, each prompt counted once, with that mean."""
        held: dict[frozenset[str], int] = {}
        for arm in findings:
            for group in word_groups(arm.prompt):
                held[group] = held.get(group, 0) + 1
        rates: dict[frozenset[str], list[float]] = {g: [] for g, count in held.items() if count >= 2}
        for arm in self.arms.values():
            if arm.judged:
                unsafe = arm.unsafe if concept is None else arm.concepts.get(concept, 0)
                for group in word_groups(arm.prompt):
                    if group in rates:
                        rates[group].append(unsafe / arm.judged)
        means = {g: sum(r) / len(r) for g, r in rates.items()}
        return {g: m for g, m in means.items() if m > self.settings.threshold}

    def close_round(self) -> None:
        self.pool_families()
        if self.first_finding_at is None and any(
            a.status(self.settings) == "finding" for a in self.arms.values()
        ):
            self.first_finding_at = self.spent
        self.round += 1

    def findings(self) -> list[Arm]:
        """Confirmed prompts, the surest first (highest lower bound, then rate, then proposal order)."""
        found = [a for a in self.arms.values() if a.status(self.settings) == "finding"]
        order = {p: i for i, p in enumerate(self.arms)}
        level = self.settings.level
        return sorted(found, key=lambda a: (-a.interval(level)[0], -(a.rate or 0), order[a.prompt]))


# ------------------------------------------------------------------------------------------------
# Proposals

_WORD = re.compile(r"[\w'-]+")


# words that frame or join a prompt rather than say what it shows
STOPWORDS = frozenset("a an the of photo picture image in on at with and or to by for from".split())


def words_of(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    return [w for w in words_of(text) if w not in STOPWORDS]


@lru_cache(maxsize=65536)
def word_groups(text: str) -> tuple[frozenset[str], ...]:
    """A prompt's possible families: each content word, and each pair of them (a combination such as
    a gender cue with a culture cue can be unsafe where neither word is alone)."""
    words = sorted(set(content_words(text)))
    singles = [frozenset((w,)) for w in words]
    pairs = [frozenset((a, b)) for i, a in enumerate(words) for b in words[i + 1 :]]
    return tuple(singles + pairs)


class PromptMutator:
    """Proposes prompts near a parent: swap a word, insert a word or phrase, drop a word, or splice
    two prompts; or recombines a seed prompt with fresh phrases. ``vocabulary``: single words;
    ``phrases``: multi-word units ("in a kitchen") inserted whole. ``fixed``: words never swapped or
    dropped (the frame "a photo of"), so a mutation changes what is shown rather than breaking the
    sentence."""

    OPERATIONS = ("swap", "insert", "drop", "splice")

    def __init__(
        self,
        vocabulary: Iterable[str],
        phrases: Iterable[str] = (),
        fixed: Iterable[str] = ("a", "an", "photo", "of"),
    ) -> None:
        self.vocabulary = sorted(dict.fromkeys(w for w in vocabulary if w))
        self.phrases = sorted(dict.fromkeys(p for p in phrases if p))
        self.fixed = set(fixed)
        if not self.vocabulary and not self.phrases:
            raise ValueError("vocabulary is empty: the search has no words to propose prompts with")

    def _free(self, words: list[str]) -> list[int]:
        return [i for i, w in enumerate(words) if w not in self.fixed]

    def recombine(
        self, seed: str, rng: random.Random, met: Mapping[str, int] | None = None
    ) -> tuple[str, str]:
        """A seed prompt with one or two phrases (or words) appended: a fresh point of the space.
        With ``met`` (phrase -> how many prompts tried hold the seed and it), the phrases the seed has
        met least are appended, ties broken at random."""
        units = self.phrases or self.vocabulary
        count = min(len(units), rng.choice((1, 1, 2)))
        if met is None:
            extra = rng.sample(units, count)
        else:
            extra = sorted(rng.sample(units, len(units)), key=lambda u: met.get(u, 0))[:count]
        return " ".join([*words_of(seed), *(w for unit in extra for w in unit.split())]), "recombine"

    def mutate(self, parent: str, other: str | None, rng: random.Random) -> tuple[str, str]:
        """A new prompt from ``parent`` (and ``other`` for a splice) and the operation that made it."""
        words = words_of(parent)
        free = self._free(words)
        ops = ["insert"]
        if free and self.vocabulary:
            ops.append("swap")
        if len(free) >= 2:
            ops.append("drop")
        if other is not None and other != parent:
            ops.append("splice")
        op = rng.choice(ops)
        if op == "swap":
            i = rng.choice(free)
            words[i] = rng.choice(self.vocabulary)
        elif op == "drop":
            del words[rng.choice(free)]
        elif op == "splice":
            theirs = words_of(other or "")
            # splice after each prompt's leading frame ("a photo of"), so the result keeps one frame
            frame_a = next((i for i, w in enumerate(words) if w not in self.fixed), len(words))
            frame_b = next((i for i, w in enumerate(theirs) if w not in self.fixed), len(theirs))
            cut_a = rng.randint(min(frame_a + 1, len(words)), len(words))
            cut_b = rng.randint(min(frame_b + 1, len(theirs)), len(theirs))
            words = words[:cut_a] + theirs[cut_b:]
        else:
            pool_phrases = bool(self.phrases) and (not self.vocabulary or rng.random() < 0.6)
            unit = rng.choice(self.phrases) if pool_phrases else rng.choice(self.vocabulary)
            where = rng.randint(min(len(words), 3), len(words))  # after the "a photo of" frame
            words = words[:where] + unit.split() + words[where:]
        return " ".join(words), op


def template_prompts(seeds: Sequence[str], phrases: Sequence[str]) -> list[str]:
    """The space one edit away from the seeds: every seed alone and with each phrase appended. What
    random search draws from, and what an exhaustive sweep would cover."""
    out = [" ".join(words_of(s)) for s in seeds]
    out += [" ".join([*words_of(s), *words_of(p)]) for s in seeds for p in phrases]
    return list(dict.fromkeys(out))


class RandomTemplates:
    """A proposer that ignores its parent and draws a prompt of a fixed space uniformly, without
    replacement: random search, allocated by the same rounds as the search (the baseline that tells
    what the proposals add). A replayed search makes the same calls, so it draws the same prompts."""

    def __init__(self, prompts: Sequence[str]) -> None:
        if not prompts:
            raise ValueError("random search needs at least one prompt to draw from")
        self.left = list(dict.fromkeys(prompts))

    def _draw(self, fallback: str, rng: random.Random) -> tuple[str, str]:
        if not self.left:  # the space is spent: an already tried prompt, which the search skips
            return fallback, "random"
        return self.left.pop(rng.randrange(len(self.left))), "random"

    def mutate(self, parent: str, other: str | None, rng: random.Random) -> tuple[str, str]:
        return self._draw(parent, rng)

    def recombine(self, seed: str, rng: random.Random) -> tuple[str, str]:
        return self._draw(seed, rng)


class GridExplorer:
    """Explores the template grid, exploits by mutation: each exploring recombination is a prompt of
    ``grid`` (the seeds x phrases space) not drawn before, one of the seed's own first, uniformly;
    each mutation comes from ``base``. The search's ``explore_share`` then splits new prompts between
    the space an exhaustive sweep would cover and the proposals near what looked unsafe, which reach
    prompts outside it. Without replacement, as :class:`RandomTemplates`: a replayed search draws the
    same prompts."""

    def __init__(self, grid: Sequence[str], seeds: Sequence[str], base: Any) -> None:
        self.base = base
        keys = sorted({" ".join(words_of(s)) for s in seeds}, key=len, reverse=True)
        self.left: dict[str, list[str]] = {k: [] for k in keys}
        for prompt in dict.fromkeys(grid):
            text = " ".join(words_of(prompt))
            # the longest seed the prompt starts with ("a photo of a man" is not "a photo of a manager")
            key = next((k for k in keys if text != k and (text + " ").startswith(k + " ")), None)
            if key is not None:
                self.left[key].append(text)
        # an empty grid (no phrases) is no error: every exploring draw falls back to the base's

    @property
    def phrases(self) -> list[str]:  # what the search counts pairs by (SearchSettings.cover_pairs)
        return list(getattr(self.base, "phrases", ()))

    def recombine(
        self, seed: str, rng: random.Random, met: Mapping[str, int] | None = None
    ) -> tuple[str, str]:
        """A grid prompt not drawn before: of ``seed``'s row when it has one left, else of any row.
        With ``met`` (phrase -> prompts tried holding the seed and it), the least met phrases first."""
        key = " ".join(words_of(seed))
        pool = self.left.get(key) or []
        if not pool:  # this seed's row is spent: any other row's prompt
            rest = [k for k, v in self.left.items() if v]
            if not rest:
                return self.base.recombine(seed, rng)
            key = rest[rng.randrange(len(rest))]
            pool, met = self.left[key], None
        i = rng.randrange(len(pool))  # drawn in both cases: the recorded runs' random stream
        if met:
            order = rng.sample(range(len(pool)), len(pool))
            i = min(order, key=lambda j: self._times_met(pool[j][len(key) :], met))
        return pool.pop(i), "grid"

    @staticmethod
    def _times_met(rest: str, met: Mapping[str, int]) -> int:
        words = set(content_words(rest))
        return sum(n for unit, n in met.items() if set(content_words(unit)) <= words)

    def mutate(self, parent: str, other: str | None, rng: random.Random) -> tuple[str, str]:
        return self.base.mutate(parent, other, rng)


# ------------------------------------------------------------------------------------------------
# One round

Judge = Callable[[Sequence[str]], list[str | None]]  # prompt -> None if benign, else why it is refused


def _thompson_parent(arms: list[Arm], rng: random.Random) -> Arm:
    draws = [rng.betavariate(a.unsafe + 0.5, a.judged - a.unsafe + 0.5) for a in arms]
    return arms[max(range(len(arms)), key=draws.__getitem__)]


def _propose(
    state: SearchState,
    mutator: PromptMutator,
    judge: Judge,
    count: int,
    rng: random.Random,
) -> list[Arm]:
    """Up to ``count`` new benign prompts; the judge's refusals are remembered and never retried."""
    tried = [a for a in state.arms.values() if a.images]
    if not tried:
        return []
    out: list[Arm] = []
    seen = set(state.arms) | set(state.refused)
    attempts = 0
    # a confirmed finding needs no more neighbours of its own: its family is found, and its
    # children would mostly be more of the same; the search looks near prompts still in doubt
    found = [a for a in tried if a.status(state.settings) == "finding"]
    doubtful = [a for a in tried if a.status(state.settings) != "finding"] or tried
    # a prompt holding every content word of a finding is that finding with more words: it would
    # spend images confirming what is known, so it is not proposed
    known = [frozenset(content_words(a.prompt)) for a in found]
    # and one holding a word group whose family is confirmed on pooled images: more of a known family
    known += state.confirmed_families()
    seeds = [a for a in tried if a.operation == "seed"] or tried
    children: dict[str, int] = dict.fromkeys((a.prompt for a in tried), 0)
    for a in state.arms.values():
        if a.parent in children:
            children[a.parent] += 1
    # cover_pairs: how many prompts tried (or refused) hold each seed's words and each phrase's
    phrases = list(getattr(mutator, "phrases", ())) if state.settings.cover_pairs else []
    met: dict[str, dict[str, int]] = {}
    if phrases:
        held = [set(content_words(p)) for p in (*state.arms, *state.refused)]
        units = {u: set(content_words(u)) for u in phrases}
        for a in seeds:
            mine = set(content_words(a.prompt))
            met[a.prompt] = {u: sum((mine | w) <= h for h in held) for u, w in units.items()}
    while len(out) < count and attempts < 40 * count:
        batch = []
        for _ in range(count - len(out)):
            attempts += 1
            if rng.random() < state.settings.explore_share:
                # explore: a seed prompt recombined with fresh phrases, the least used seed first, so
                # every subject meets every setting in time even without an early hit near it
                fewest = min(children[a.prompt] for a in seeds)
                parent = rng.choice([a for a in seeds if children[a.prompt] == fewest])
                if met:
                    prompt, op = mutator.recombine(parent.prompt, rng, met[parent.prompt])
                    for u in units:
                        if units[u] <= set(content_words(prompt)):
                            met[parent.prompt][u] += 1
                else:
                    prompt, op = mutator.recombine(parent.prompt, rng)
            else:
                parent = _thompson_parent(doubtful, rng)
                prompt, op = mutator.mutate(parent.prompt, rng.choice(tried).prompt, rng)
            children[parent.prompt] += 1
            if prompt in seen or not prompt.strip():
                continue
            words = set(content_words(prompt))
            if any(k <= words for k in known if k):
                continue
            seen.add(prompt)
            batch.append(Arm(prompt, state.round, parent.prompt, op))
        if not batch:
            continue
        for arm, reason in zip(batch, judge([a.prompt for a in batch]), strict=True):
            if reason is None:
                out.append(arm)
            else:
                state.refused[arm.prompt] = reason
    return out


def plan_round(
    state: SearchState,
    seeds: Sequence[str],
    mutator: PromptMutator,
    judge: Judge,
) -> dict[str, int]:
    """The next round: ``{prompt: total images it should have}`` (new prompts are added to
    ``state.arms``). Empty when the budget is spent or nothing is left to try."""
    s = state.settings
    remaining = s.budget - state.spent
    if remaining <= 0:
        return {}
    rng = random.Random(f"redteam:{s.seed}:{state.round}")
    plan: dict[str, int] = {}
    state.pool_families()
    if state.round == 0:
        # the seed prompts, as many as the budget allows (the judge's refusals are kept with reasons)
        benign = [p for p in dict.fromkeys(seeds) if p not in state.arms]
        for prompt, reason in zip(benign, judge(benign), strict=True):
            if reason is not None:
                state.refused[prompt] = reason
                continue
            n = min(s.initial_images, remaining - sum(plan.values()))
            if n <= 0:
                break
            state.arms[prompt] = Arm(prompt, 0)
            plan[prompt] = n
        return plan

    room = min(s.round_images, remaining)
    # the budget's last ``final_share``: no new prompt while an open one can take the images
    final = remaining <= s.final_share * s.budget
    reserve = (
        0 if final else min(room, s.initial_images * max(1, round(room * s.explore_share / s.initial_images)))
    )
    open_arms = [a for a in state.arms.values() if a.images and a.status(s) == "open"]
    # the most probable first, on their own images: ordered by family evidence, the hottest known
    # family would take every round's images (measured on the simulated spaces)
    if s.known_family_last:
        # after the others: prompts holding a known family's words or every content word of a finding
        known = state.known_families()
        known += [frozenset(content_words(a.prompt)) for a in state.findings()]
        known = [k for k in known if k]

        def is_known(arm: Arm) -> bool:
            words = set(content_words(arm.prompt))
            return any(k <= words for k in known)

        open_arms.sort(key=lambda a: (is_known(a), -a.p_above(s.threshold)))
    else:
        open_arms.sort(key=lambda a: -a.p_above(s.threshold))

    def promote(limit: int) -> int:
        # double the most probable open prompts' images, within ``limit``
        spent = 0
        for arm in open_arms:
            have = plan.get(arm.prompt, arm.images)
            add = min(arm.images, s.max_images - have, limit - spent)
            if add > 0:
                plan[arm.prompt] = have + add
                spent += add
        return spent

    used = promote(room - reserve)
    wanted = 0 if final and used else (room - used) // s.initial_images
    for arm in _propose(state, mutator, judge, wanted, rng):
        state.arms[arm.prompt] = arm
        plan[arm.prompt] = s.initial_images
        used += s.initial_images
    # what proposals could not use (no new prompt found, or the budget's last few images)
    promote(room - used)
    return plan


class LanguageModelProposer:
    """Proposals from a local causal language model (transformers), beside the word mutations.

    For a share ``lm_share`` of mutations the model continues a short list of tried prompts (the
    parent last but one) with a new line; the rest, and every recombination, come from ``base``.
    Sampling is seeded from the round's generator, so a resumed run proposes the same prompts on the
    same machine. Weights load from a local folder, safetensors only; nothing is downloaded.
    """

    def __init__(
        self, folder: str, base: PromptMutator, lm_share: float = 0.5, max_new_tokens: int = 16
    ) -> None:
        from pathlib import Path

        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(folder)
        if not path.is_dir():
            raise ValueError(f"proposer_lm {folder}: no such folder")
        if not any(path.glob("*.safetensors")):
            raise ValueError(
                f"proposer_lm {folder}: no .safetensors weights (pickled weights are not loaded)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model.eval()
        self.base = base
        self.lm_share = lm_share
        self.max_new_tokens = max_new_tokens

    def recombine(self, seed: str, rng: random.Random) -> tuple[str, str]:
        return self.base.recombine(seed, rng)

    def mutate(self, parent: str, other: str | None, rng: random.Random) -> tuple[str, str]:
        if rng.random() >= self.lm_share:
            return self.base.mutate(parent, other, rng)
        import torch

        context = "\n".join(p for p in (other, parent) if p) + "\n"
        inputs = self.tokenizer(context, return_tensors="pt")
        torch.manual_seed(rng.randrange(2**31))
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                do_sample=True,
                top_k=50,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        text = self.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        line = next((t.strip() for t in text.splitlines() if t.strip()), "")
        words = words_of(line)
        if not words:
            return self.base.mutate(parent, other, rng)
        return " ".join(words), "language model"
