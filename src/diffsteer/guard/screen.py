"""Screening planned images: drop every job whose prompt the guard blocks, and say which and why.

A run plans (record, request) pairs; the guard checks each distinct prompt the model will receive
(the request's final prompt, after any intervention rewrote it) once, and the blocked ones are made
into no image at all. The returned summary is what an audit shows and stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from diffsteer.guard.guard import PromptGuard

__all__ = ["screen_jobs"]


def screen_jobs(guard: PromptGuard, jobs: Sequence[tuple[Any, Any]]) -> tuple[list[tuple[Any, Any]], dict]:
    """The jobs whose prompt the guard allows, and a JSON-ready summary of the blocked ones.

    ``jobs``: (record, request) pairs; ``record`` has ``mitigation`` and ``prompt_id``, ``request`` has
    ``prompt`` (what the model reads).
    """
    prompts = list(dict.fromkeys(req.prompt for _, req in jobs))
    verdicts = dict(zip(prompts, guard.check_many(prompts), strict=True)) if prompts else {}
    kept = [(rec, req) for rec, req in jobs if verdicts[req.prompt].allowed]
    blocked: dict[tuple[str, str], dict] = {}
    for rec, req in jobs:
        verdict = verdicts[req.prompt]
        if verdict.allowed:
            continue
        item = blocked.setdefault(
            (rec.mitigation, rec.prompt_id),
            {
                "mitigation": rec.mitigation,
                "prompt_id": rec.prompt_id,
                "prompt": req.prompt,
                "decoded": verdict.decoded,
                "similarity": verdict.similarity,
                "reason": verdict.reason,
                "images_not_made": 0,
            },
        )
        item["images_not_made"] += 1
    phrases = {} if guard.judge.phrase_file is None else {"phrases": guard.judge.phrase_file}
    return kept, {
        "file": guard.source,
        **phrases,
        "similarity_threshold": guard.similarity_threshold,
        "n_checked_prompts": len(prompts),
        "n_blocked_prompts": sum(1 for v in verdicts.values() if v.blocked),
        "n_images_not_made": len(jobs) - len(kept),
        "blocked": list(blocked.values()),
    }
