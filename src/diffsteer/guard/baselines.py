"""The guard's baselines, scored on the same prompts: what the generative step adds over simpler guards.

* ``KeywordBaseline``: the prompt judge's phrase lists on the prompt itself (score 0 or 1).
* ``BagOfWordsBaseline``: a logistic regression over word counts, trained on the guard's captions.
* ``TextClassifierBaseline``: a maintained offensive-language classifier (alt-profanity-check, the
  prompt-classifier extra) on the prompt, untrained on the guard's captions: what a real deployment
  could use off the shelf.
* ``PooledProbe``: a logistic regression on the text encoder's pooled embedding (SDXL's pooled
  output; on SD 1.x/2.x the hidden state at the first end token, which is what CLIP pools), trained
  on the same captions: a discriminative guard reading the same input as the generative one.

The trained baselines need a label per caption; :func:`caption_labels` takes it from the prompt
judge, which is exact for captions that name their content (pictoworld's say "with a weapon").
Each baseline's ``scores(prompts)`` is a probability-like number per prompt, higher = more unsafe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from diffsteer.attributes.prompt_judge import PromptJudge
from diffsteer.guard.embeddings import encode_conditions

__all__ = [
    "BagOfWordsBaseline",
    "KeywordBaseline",
    "PooledProbe",
    "TextClassifierBaseline",
    "caption_labels",
    "pooled_embeddings",
]


def caption_labels(captions: Sequence[str], judge: PromptJudge | None = None) -> np.ndarray:
    """1 for a caption the prompt judge calls unsafe, else 0."""
    judge = judge or PromptJudge(text_classifier=False)
    return np.array([int(v.is_unsafe) for v in judge.judge_many(list(captions))])


def _check_labels(labels: np.ndarray) -> None:
    if len(set(labels.tolist())) < 2:
        raise ValueError("captions: the baselines need both safe and unsafe captions to learn from")


class KeywordBaseline:
    name = "keyword list on the prompt"

    def __init__(self, judge: PromptJudge | None = None) -> None:
        self.judge = judge or PromptJudge(text_classifier=False)

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        return np.array([float(v.is_unsafe) for v in self.judge.judge_many(list(prompts))])


class TextClassifierBaseline:
    name = "alt-profanity-check on the prompt"

    def __init__(self) -> None:
        from diffsteer.attributes.prompt_judge import text_classifier_available

        if not text_classifier_available():
            hint = "pip install 'diffsteer[prompt-classifier]'"
            raise ImportError(f"the text-classifier baseline needs alt-profanity-check: {hint}")

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        from profanity_check import predict_prob

        return np.asarray(predict_prob(list(prompts)), dtype=float)


class BagOfWordsBaseline:
    name = "bag-of-words linear classifier"

    def __init__(self, captions: Sequence[str], labels: np.ndarray) -> None:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels)
        _check_labels(labels)
        self.vectorizer = CountVectorizer(token_pattern=r"[a-z]+(?:-[a-z]+)*", lowercase=True)
        features = self.vectorizer.fit_transform(list(captions))
        self.model = LogisticRegression(class_weight="balanced", max_iter=2000).fit(features, labels)

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(self.vectorizer.transform(list(prompts)))[:, 1]


def pooled_embeddings(pipe: Any, prompts: Sequence[str]) -> np.ndarray:
    """The pooled text embedding of each prompt ``(n, dim)``."""
    cond = encode_conditions(pipe, list(prompts))
    if cond.pooled is not None:
        return cond.pooled.numpy()
    ids = pipe.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=cond.tokens.shape[1],
        truncation=True,
        return_tensors="pt",
    )["input_ids"]
    eos = (ids == pipe.tokenizer.eos_token_id).int().argmax(dim=1)  # the first end token
    return cond.tokens[np.arange(len(prompts)), eos].numpy()


class PooledProbe:
    name = "linear probe on the pooled embedding"

    def __init__(self, pipe: Any, captions: Sequence[str], labels: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        labels = np.asarray(labels)
        _check_labels(labels)
        self.pipe = pipe
        self.model = make_pipeline(
            StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000)
        )
        self.model.fit(pooled_embeddings(pipe, captions), labels)

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(pooled_embeddings(self.pipe, prompts))[:, 1]
