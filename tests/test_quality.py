"""Quality metrics: Fréchet distance and mean CLIP score, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffsteer.metrics.quality import clip_score_mean, frechet_distance


def test_frechet_distance_of_one_dimensional_gaussians():
    # sample mean 0, sample variance 1 vs mean 2, variance 4: 2^2 + 1 + 4 - 2 sqrt(1 * 4) = 5
    a = np.array([[-1.0], [1.0]]) / np.sqrt(2)
    b = 2.0 + 2.0 * a
    assert frechet_distance(a, b) == pytest.approx(5.0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_of_independent_axes_adds_up():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    b = a * np.array([1.0, 2.0, 3.0]) + np.array([1.0, 0.0, 0.0])
    # diagonal covariances c and k^2 c: per axis (shift)^2 + c (1 - k)^2
    var = a.var(axis=0, ddof=1)
    expected = 1.0 + var[1] * (1 - 2) ** 2 + var[2] * (1 - 3) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)  # off-diagonal noise only
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_clip_score_mean_is_the_mean_of_per_image_scores(tiny_model_dirs):
    from diffsteer.attributes import ClipZeroShotClassifier

    clip = ClipZeroShotClassifier.from_pretrained(str(tiny_model_dirs["clip"]))
    images = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    scores = clip.clip_score(images, "a photo of a doctor")
    assert clip_score_mean(clip, images, "a photo of a doctor") == pytest.approx(np.mean(scores))
    assert np.isnan(clip_score_mean(clip, [], "a photo of a doctor"))
