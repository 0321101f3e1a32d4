"""Adversarial prompts for testing a guard: a word-substitution attack in the text encoder's embedding
space, and a hook that reads the red team's findings.

The attack (in the spirit of SneakyPrompt, without querying images) starts from an unsafe target
prompt and replaces words, one at a time, with vocabulary words chosen so that the prompt's
conditional embedding (all tokens, and SDXL's pooled embedding) stays as close as possible to the
target's, until the prompt judge no longer matches it. Further rounds keep improving the distance
with any substitution that leaves the prompt passing the judge. Whether the images of a prompt found
this way really show the concept is for an image judge to say (the research script asks pictoworld's
oracle); the attack only guarantees the words pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffsteer.attributes.prompt_judge import PromptJudge
from diffsteer.guard.embeddings import TextConditions, encode_conditions
from diffsteer.tokenizer import split_words

__all__ = ["AttackResult", "attack_vocabulary", "read_redteam_findings", "substitution_attack"]


@dataclass(frozen=True)
class AttackResult:
    target: str  # the unsafe prompt whose embedding the attack imitates
    prompt: str  # the substituted prompt
    distance: float  # relative embedding distance to the target (0: the same embedding)
    passes_judge: bool  # whether the prompt judge lets the prompt's words through
    substitutions: int


def attack_vocabulary(
    tokenizer: Any, judge: PromptJudge, limit: int | None = 2000, seed: int = 0
) -> list[str]:
    """Whole words of the tokenizer's vocabulary that the judge does not flag on their own.

    Word-level tokenizers give every entry; CLIP's byte-pair vocabulary marks whole words with
    ``</w>``. ``limit``: at most this many words, a seeded random choice (a 49k vocabulary would make
    each substitution 49k encodings).
    """
    words = []
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    for token in tokenizer.get_vocab():
        if token in specials:
            continue
        word = token[:-4] if token.endswith("</w>") else token
        if not re.fullmatch(r"[a-z][a-z\-]*", word):
            continue
        if not judge.match(word).is_unsafe:
            words.append(word)
    words = sorted(set(words))
    if limit is not None and len(words) > limit:
        order = torch.randperm(len(words), generator=torch.Generator().manual_seed(seed))[:limit]
        words = [words[i] for i in sorted(order.tolist())]
    return words


def _flat(cond: TextConditions) -> torch.Tensor:
    parts = [cond.tokens.flatten(1)]
    if cond.pooled is not None:
        parts.append(cond.pooled)
    return torch.cat(parts, dim=1)


def _distances(pipe: Any, prompts: list[str], target: torch.Tensor) -> torch.Tensor:
    flat = _flat(encode_conditions(pipe, prompts))
    return (flat - target).norm(dim=1) / target.norm()


def substitution_attack(
    pipe: Any,
    target: str,
    *,
    judge: PromptJudge | None = None,
    vocabulary: Sequence[str] | None = None,
    rounds: int = 2,
    first_choice: int = 0,
) -> AttackResult:
    """Substitute words of ``target`` until the judge passes it, staying near its embedding.

    ``first_choice``: take the (k+1)-th best word for the first substitution, to get another prompt
    from the same target. ``rounds``: improvement sweeps over every word after the judge passes.
    """
    judge = judge or PromptJudge(text_classifier=False)
    vocab = list(vocabulary) if vocabulary is not None else attack_vocabulary(pipe.tokenizer, judge)
    if not vocab:
        raise ValueError("vocabulary is empty")
    goal = _flat(encode_conditions(pipe, [target]))[0]
    words = split_words(target, hyphenated_words=True)
    changes = 0
    first = True
    # 1. replace every word the judge flags, best replacement first
    while judge.judge(" ".join(words)).is_unsafe:
        flagged = [i for i, w in enumerate(words) if judge.match(w).is_unsafe]
        if not flagged:  # a multi-word phrase: any of its words may go
            flagged = list(range(len(words)))
        candidates = [(i, w) for i in flagged for w in vocab if w != words[i]]
        prompts = [" ".join(words[:i] + [w] + words[i + 1 :]) for i, w in candidates]
        dist = _distances(pipe, prompts, goal)
        order = dist.argsort()
        pick = int(order[min(first_choice, len(order) - 1)]) if first else int(order[0])
        first = False
        i, w = candidates[pick]
        words[i] = w
        changes += 1
        if changes > len(words) * 2:
            break
    # 2. improve the distance while the words keep passing
    best = float(_distances(pipe, [" ".join(words)], goal)[0])
    for _ in range(rounds):
        improved = False
        for i in range(len(words)):
            prompts = [" ".join(words[:i] + [w] + words[i + 1 :]) for w in vocab if w != words[i]]
            dist = _distances(pipe, prompts, goal)
            for j in dist.argsort().tolist():
                if float(dist[j]) >= best:
                    break
                if not judge.judge(prompts[j]).is_unsafe:
                    words = split_words(prompts[j], hyphenated_words=True)
                    best = float(dist[j])
                    changes += 1
                    improved = True
                    break
        if not improved:
            break
    prompt = " ".join(words)
    return AttackResult(target, prompt, round(best, 4), not judge.judge(prompt).is_unsafe, changes)


def read_redteam_findings(path: Path | str) -> list[str]:
    """Prompts from a ``diffsteer redteam`` findings file (``redteam.json``), if one exists.

    Accepts a list of findings or ``{"findings": [...]}``, each a prompt string or an object with a
    ``prompt`` field; a missing file gives an empty list (the red team may not have run).
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    items = data.get("findings", []) if isinstance(data, dict) else data
    prompts = []
    for item in items if isinstance(items, list) else []:
        text = item if isinstance(item, str) else item.get("prompt") if isinstance(item, dict) else None
        if isinstance(text, str) and text.strip():
            prompts.append(text.strip())
    return list(dict.fromkeys(prompts))
