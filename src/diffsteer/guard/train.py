"""Train a guard: fit a decoder that writes a pipeline's text guidance back as the prompt it came from.

The text encoder stays frozen: every caption is encoded once with the pipeline's own ``encode_prompt``
and the decoder learns to read the embeddings back into the caption's tokens. A share of the distinct
captions (``holdout``) is kept out of training and decoded at the end, so the file records how often
the decoder reads an unseen caption word for word. A little Gaussian noise on the embeddings during
training teaches it to read embeddings near a caption's (what an adversarial prompt produces) as that
caption. Optionally (``scrambled``) a share of the examples show the embedding of the caption with its
words dropped, repeated and reordered, still asking for the caption itself: red-team prompts are such
word salads, and a text encoder still reads the caption's meaning in them. The file is written once,
atomically, at the end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffsteer.guard.decoder import CaptionDecoder, DecoderShape
from diffsteer.guard.embeddings import TextConditions, encode_conditions, text_encoder_fingerprint
from diffsteer.guard.guard_file import save_guard

__all__ = [
    "GuardTrainingResult",
    "decode_sentences",
    "scramble_caption",
    "split_captions",
    "tokenize_prompts",
    "train_guard",
]

# stage, done, total, loss
Progress = Callable[..., None]
DEFAULT_SIMILARITY_THRESHOLD = 0.5
SCRAMBLED_VARIANTS = 8  # scrambled versions encoded per training caption


@dataclass
class GuardTrainingResult:
    path: Path
    train_captions: list[str]
    heldout_captions: list[str]
    heldout_exact: float | None  # share of held-out captions decoded word for word (None: no holdout)
    final_loss: float
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)


def split_captions(captions: Sequence[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """Distinct captions (first appearance order kept), split at random into (train, held out)."""
    distinct = list(dict.fromkeys(c.strip() for c in captions if c.strip()))
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be at least 0 and below 1, got {holdout}")
    n_out = int(round(holdout * len(distinct)))
    order = np.random.default_rng(seed).permutation(len(distinct))
    out = {int(i) for i in order[:n_out]}
    return [c for i, c in enumerate(distinct) if i not in out], [
        c for i, c in enumerate(distinct) if i in out
    ]


def scramble_caption(caption: str, rng: np.random.Generator) -> str:
    """The caption's words with each dropped at 20%, one repeated at 30%, and a stretch of two to four
    reversed or shuffled: the kind of word salad a red-team search writes. At least two words stay."""
    words = caption.split()
    kept = [w for w in words if rng.random() >= 0.2]
    if len(kept) < 2:
        kept = list(words[:2])
    if rng.random() < 0.3:
        i = int(rng.integers(len(kept)))
        kept.insert(int(rng.integers(len(kept) + 1)), kept[i])
    if len(kept) >= 3:
        span = int(rng.integers(2, min(4, len(kept)) + 1))
        start = int(rng.integers(len(kept) - span + 1))
        stretch = kept[start : start + span]
        kept[start : start + span] = stretch[::-1] if rng.random() < 0.5 else list(rng.permutation(stretch))
    return " ".join(kept)


def tokenize_prompts(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, max_length)`` (BOS ... EOS, then padding) and the mask of real tokens."""
    enc = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return enc["input_ids"], enc["attention_mask"]


def decode_sentences(tokenizer: Any, ids: Sequence[Sequence[int]]) -> list[str]:
    return [" ".join(tokenizer.decode(list(row), skip_special_tokens=True).split()) for row in ids]


def _shape_for(pipe: Any, cond: TextConditions, width: int, layers: int, heads: int) -> DecoderShape:
    tok = pipe.tokenizer
    return DecoderShape(
        token_dim=cond.token_dim,
        pooled_dim=cond.pooled_dim,
        memory_length=int(cond.tokens.shape[1]),
        vocab_size=len(tok),
        max_length=int(tok.model_max_length),
        bos_id=int(tok.bos_token_id),
        eos_id=int(tok.eos_token_id),
        width=width,
        layers=layers,
        heads=heads,
    )


def _check(name: str, value: float, low: float, *, integer: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not math.isfinite(float(value))
        or value < low
        or (integer and int(value) != value)
    ):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} at least {low}, got {value!r}")


def train_guard(
    pipe: Any,
    captions: Sequence[str],
    out: Path | str,
    *,
    base_model: str,
    steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    width: int = 128,
    layers: int = 2,
    heads: int = 4,
    noise: float = 0.1,
    input_dropout: float = 0.3,
    scrambled: float = 0.0,
    holdout: float = 0.1,
    seed: int = 0,
    similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
    progress: Progress | None = None,
) -> GuardTrainingResult:
    """Train a decoder on ``captions`` for ``pipe``'s text encoder and save the guard file at ``out``.

    ``noise``: standard deviation of the Gaussian noise added to the embeddings during training, as a
    share of each dimension's spread over the captions. ``input_dropout``: share of the decoder's input
    tokens replaced by random ones during training, so that it reads each word from the embedding
    rather than guessing it from the words before (a sentence it memorised). ``scrambled``: share of the
    training examples whose embedding is that of a scrambled version of the caption
    (:func:`scramble_caption`), the target staying the caption. ``holdout``: share of the
    distinct captions kept out of training to measure word-for-word decoding. ``similarity_threshold``:
    the guard blocks a prompt whose decoded sentence shares less than this with the prompt's words
    (stored in the file).
    """
    started = time.time()
    _check("steps", steps, 1, integer=True)
    _check("batch_size", batch_size, 1, integer=True)
    _check("learning_rate", learning_rate, 0)
    _check("noise", noise, 0)
    if not 0.0 <= input_dropout < 1.0:
        raise ValueError(f"input_dropout must be at least 0 and below 1, got {input_dropout}")
    if not 0.0 <= scrambled <= 1.0:
        raise ValueError(f"scrambled must be between 0 and 1, got {scrambled}")
    _check("width", width, 8, integer=True)
    _check("layers", layers, 1, integer=True)
    _check("heads", heads, 1, integer=True)
    if width % heads:
        raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
    if not 0.0 < similarity_threshold <= 1.0:
        raise ValueError(f"similarity_threshold must be in (0, 1], got {similarity_threshold}")
    train, heldout = split_captions(captions, holdout, seed)
    if not train:
        raise ValueError("captions: no caption left to train on")
    report = progress or (lambda *a, **k: None)
    report("encode", 0, 1)
    cond = encode_conditions(pipe, train)
    report("encode", 1, 1)
    ids, mask = tokenize_prompts(pipe.tokenizer, train)
    salad = None
    if scrambled > 0:
        words = np.random.default_rng(seed + 1)
        variants = [scramble_caption(c, words) for c in train for _ in range(SCRAMBLED_VARIANTS)]
        salad = encode_conditions(pipe, variants)  # row i * SCRAMBLED_VARIANTS + k: caption i's k-th
    torch.manual_seed(seed)
    decoder = CaptionDecoder(_shape_for(pipe, cond, width, layers, heads))
    decoder.train()
    spread = cond.tokens.flatten(0, 1).std(0).clamp_min(1e-6)
    pooled_spread = cond.pooled.std(0).clamp_min(1e-6) if cond.pooled is not None else None
    optimiser = torch.optim.AdamW(decoder.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))),
    )
    rng = torch.Generator().manual_seed(seed)
    smoothed = float("nan")
    for step in range(1, steps + 1):
        idx = torch.randint(len(train), (min(batch_size, len(train)),), generator=rng)
        batch = cond[idx]
        if salad is not None:
            use = torch.rand(len(idx), generator=rng) < scrambled
            pick = idx * SCRAMBLED_VARIANTS + torch.randint(SCRAMBLED_VARIANTS, (len(idx),), generator=rng)
            mixed = salad[pick]
            batch = TextConditions(
                torch.where(use[:, None, None], mixed.tokens, batch.tokens),
                None if batch.pooled is None else torch.where(use[:, None], mixed.pooled, batch.pooled),
            )
        if noise > 0:
            tokens = batch.tokens + noise * spread * torch.randn(batch.tokens.shape, generator=rng)
            pooled = batch.pooled
            if pooled is not None and pooled_spread is not None:
                pooled = pooled + noise * pooled_spread * torch.randn(pooled.shape, generator=rng)
            batch = TextConditions(tokens, pooled)
        inputs = ids[idx]
        if input_dropout > 0:
            swap = (torch.rand(inputs.shape, generator=rng) < input_dropout) & (mask[idx] == 1)
            swap[:, 0] = False  # the start token stays
            random_ids = torch.randint(decoder.shape.vocab_size, inputs.shape, generator=rng)
            inputs = torch.where(swap, random_ids, inputs)
        loss = decoder.loss(batch, inputs, mask[idx], targets=ids[idx])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        value = float(loss.detach())
        smoothed = value if math.isnan(smoothed) else 0.95 * smoothed + 0.05 * value
        report("train", step, steps, loss=smoothed)
    decoder.eval()
    exact = None
    if heldout:
        decoded = decode_sentences(pipe.tokenizer, decoder.generate(encode_conditions(pipe, heldout))[0])
        exact = float(np.mean([_words(d) == _words(c) for d, c in zip(decoded, heldout, strict=True)]))
    seconds = time.time() - started
    record = {
        "similarity_threshold": similarity_threshold,
        "captions": len(train) + len(heldout),
        "train_captions": len(train),
        "heldout_captions": len(heldout),
        "heldout_exact": exact,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "noise": noise,
        "input_dropout": input_dropout,
        "scrambled": scrambled,
        "seed": seed,
        "final_loss": round(smoothed, 6),
        "seconds": round(seconds, 1),
    }
    path = save_guard(
        out,
        decoder,
        {
            "base_model": base_model,
            "text_encoder_fingerprint": text_encoder_fingerprint(pipe),
            "record": record,
        },
    )
    return GuardTrainingResult(path, train, heldout, exact, smoothed, seconds, record)


def _words(text: str) -> list[str]:
    from diffsteer.tokenizer import split_words

    return split_words(text, hyphenated_words=True)
