"""Image quality next to fairness: does a mitigation keep the images on the prompt and in distribution?

* :func:`clip_score_mean`: the mean CLIP score, 100 x cosine between each image and its prompt in
  CLIP space (not clipped at 0), with whatever CLIP the audit uses.
* :func:`frechet_distance`: the Fréchet distance between two sets of features (Gaussian fits), as in
  FID but on CLIP image features, so it needs no Inception network and works for any image size.
  It is biased upwards with few samples: compare distances computed from sets of equal size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

__all__ = ["clip_score_mean", "frechet_distance"]


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(a: ArrayLike, b: ArrayLike) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) for features ``(N, D)``.

    The matrix square root goes through symmetric eigendecompositions (numpy only, no complex
    round-off from a general ``sqrtm``); each set needs at least two rows.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"need at least 2 samples per set for a covariance; got {len(x)} and {len(y)}")
    mean_term = float(np.sum((x.mean(axis=0) - y.mean(axis=0)) ** 2))
    cov_x, cov_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    root_x = _psd_sqrt(cov_x)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_x @ cov_y @ root_x), 0.0, None)).sum()
    return max(0.0, mean_term + float(np.trace(cov_x) + np.trace(cov_y) - 2.0 * cross))


def clip_score_mean(classifier, images: Sequence[Image.Image], prompts: str | Sequence[str]) -> float:
    """Mean CLIP score of ``images`` against ``prompts`` (one prompt for all, or one per image).

    ``classifier`` is a :class:`diffsteer.attributes.ClipZeroShotClassifier`; NaN for no images.
    """
    scores = classifier.clip_score(list(images), prompts)
    return float(np.mean(scores)) if scores else float("nan")
