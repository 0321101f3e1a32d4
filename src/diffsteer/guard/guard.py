"""The guard: read what the model will see, then judge it (GuardT2I-style generative moderation).

*Interpret*: the decoder writes the prompt's conditional embedding back as a sentence. *Judge*: the
prompt judge (attributes/prompt_judge.py) reads that sentence, and the sentence is compared with the
words typed. A prompt is blocked when the sentence asks for unsafe content, or when it differs from
the prompt so much that the words and what the encoder made of them disagree (the mark of an
adversarial prompt written to pass a word list). Benign prompts decode back to themselves and pass.

``score`` orders prompts from harmless to blocked for ROC curves: 1 when the decoded sentence is
judged unsafe, else one minus its word similarity to the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from diffsteer.attributes.prompt_judge import PromptJudge
from diffsteer.guard.decoder import CaptionDecoder
from diffsteer.guard.embeddings import encode_conditions, text_encoder_fingerprint
from diffsteer.guard.guard_file import check_encoder, read_guard
from diffsteer.guard.train import DEFAULT_SIMILARITY_THRESHOLD, decode_sentences
from diffsteer.tokenizer import split_words

__all__ = ["GuardSetup", "GuardVerdict", "PromptBlockedError", "PromptGuard", "word_similarity"]


class PromptBlockedError(RuntimeError):
    """Raised by generation when the guard blocks the prompt; the message is the guard's reason."""

    def __init__(self, verdict: GuardVerdict) -> None:
        super().__init__(f"the guard blocked {verdict.prompt!r}: {verdict.reason}")
        self.verdict = verdict


def word_similarity(a: str, b: str) -> float:
    """1 minus the word-level edit distance over the longer sentence's length (1: the same words)."""
    x, y = split_words(a, hyphenated_words=True), split_words(b, hyphenated_words=True)
    if not x and not y:
        return 1.0
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return 1.0 - previous[-1] / max(len(x), len(y))


@dataclass(frozen=True)
class GuardVerdict:
    """The guard's answer for one prompt: allowed or not, why, and what the model reads in it."""

    prompt: str
    allowed: bool
    reason: str | None  # None when allowed
    decoded: str  # the sentence the decoder wrote from the prompt's embedding
    similarity: float  # word similarity of decoded sentence and prompt, 0..1
    concept: str | None  # the unsafe concept the decoded sentence asks for, if any
    matched: str | None  # the decoded sentence's words that matched it
    score: float  # 0 harmless .. 1 blocked for certain; for ROC curves

    @property
    def blocked(self) -> bool:
        return not self.allowed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromptGuard:
    """A trained decoder bound to one pipeline's text encoder, and the judge of its sentences.

    ``similarity_threshold`` (default: the file's): block when the decoded sentence's word similarity to
    the prompt is below it. ``judge``: the prompt judge that reads decoded sentences (default: every
    concept in safety.yaml, without the optional text classifier, so a verdict does not depend on
    what happens to be installed).
    """

    def __init__(
        self,
        pipe: Any,
        decoder: CaptionDecoder,
        metadata: dict[str, Any],
        *,
        judge: PromptJudge | None = None,
        similarity_threshold: float | None = None,
        source: str = "the guard",
    ) -> None:
        check_encoder(metadata, fingerprint=text_encoder_fingerprint(pipe), source=source)
        record = metadata.get("record", {})
        threshold = (
            similarity_threshold
            if similarity_threshold is not None
            else record.get("similarity_threshold", DEFAULT_SIMILARITY_THRESHOLD)
        )
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"similarity_threshold must be in (0, 1], got {threshold}")
        self.pipe = pipe
        self.decoder = decoder.to(getattr(pipe, "_execution_device", None) or pipe.device)
        self.metadata = metadata
        self.judge = judge if judge is not None else PromptJudge(text_classifier=False)
        self.similarity_threshold = float(threshold)
        self.source = source

    @classmethod
    def load(cls, path: Path | str, pipe: Any, **kwargs: Any) -> PromptGuard:
        """Read a guard file for ``pipe``; GuardMismatchError when it was trained on another encoder."""
        decoder, metadata = read_guard(path)
        return cls(pipe, decoder, metadata, source=str(path), **kwargs)

    def interpret(self, prompts: Sequence[str], batch_size: int = 256) -> list[str]:
        """The sentence the decoder reads in each prompt's conditional embedding."""
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            cond = encode_conditions(self.pipe, prompts[i : i + batch_size])
            device = self.decoder.memory_position.device
            cond.tokens = cond.tokens.to(device)
            if cond.pooled is not None:
                cond.pooled = cond.pooled.to(device)
            ids, _ = self.decoder.generate(cond)
            out.extend(decode_sentences(self.pipe.tokenizer, ids))
        return out

    def check(self, prompt: str) -> GuardVerdict:
        return self.check_many([prompt])[0]

    def check_many(self, prompts: Sequence[str]) -> list[GuardVerdict]:
        """One verdict per prompt: interpret, then judge the decoded sentence and its distance."""
        prompts = list(prompts)
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise ValueError(f"prompt must be a non-empty string, got {p!r}")
        if not prompts:
            return []
        decoded = self.interpret(prompts)
        verdicts = self.judge.judge_many(decoded)
        out = []
        for prompt, sentence, (unsafe, concept, matched) in zip(prompts, decoded, verdicts, strict=True):
            similarity = word_similarity(prompt, sentence)
            if unsafe:
                reason = f"the model reads it as {sentence!r}, which asks for {concept} ({matched!r})"
            elif similarity < self.similarity_threshold:
                reason = (
                    f"the model reads it as {sentence!r}, far from the words typed "
                    f"(similarity {similarity:.2f} < {self.similarity_threshold:.2f})"
                )
            else:
                reason = None
            out.append(
                GuardVerdict(
                    prompt=prompt,
                    allowed=reason is None,
                    reason=reason,
                    decoded=sentence,
                    similarity=round(similarity, 4),
                    concept=concept if unsafe else None,
                    matched=matched if unsafe else None,
                    score=1.0 if unsafe else round(1.0 - similarity, 4),
                )
            )
        return out


@dataclass(frozen=True)
class GuardSetup:
    """A guard file and the judge of its sentences, read and checked before any model loads, so that a
    damaged guard or phrase file fails in the first second. ``bind`` ties them to a pipeline.

    ``phrases``: a user's phrase file (docs/safety.md) that the judge reads beside safety.yaml, e.g.
    the slang the guard decodes and the shipped list leaves out.
    """

    source: str
    decoder: CaptionDecoder
    metadata: dict[str, Any]
    judge: PromptJudge

    @classmethod
    def read(cls, guard: Path | str, phrases: Path | str | None = None) -> GuardSetup:
        decoder, metadata = read_guard(guard)
        judge = PromptJudge.from_phrase_file(phrases, text_classifier=False)
        return cls(str(guard), decoder, metadata, judge)

    def bind(self, pipe: Any) -> PromptGuard:
        """The guard for ``pipe``; GuardMismatchError when it was trained on another text encoder."""
        return PromptGuard(pipe, self.decoder, self.metadata, judge=self.judge, source=self.source)
