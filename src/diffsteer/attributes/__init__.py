"""Attribute axes and zero-shot CLIP labelling of generated people (ENTIGEN's protocol)."""

from diffsteer.attributes.axes import (
    OBJECT_PROMPT,
    PERSON_PROMPT,
    UNCERTAIN,
    Axis,
    AxisSpecError,
    UnknownAxisError,
    axis_from_mapping,
    builtin_axes,
    culture_axis,
    get_axis,
)
from diffsteer.attributes.clip_zero_shot import (
    DEFAULT_CLASSIFIER,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    AxisLabel,
    ClassifierNotFoundError,
    ClipZeroShotClassifier,
    ImageLabels,
)

__all__ = [
    "DEFAULT_CLASSIFIER",
    "OBJECT_PROMPT",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "PERSON_PROMPT",
    "UNCERTAIN",
    "Axis",
    "AxisLabel",
    "AxisSpecError",
    "ClassifierNotFoundError",
    "ClipZeroShotClassifier",
    "ImageLabels",
    "UnknownAxisError",
    "axis_from_mapping",
    "builtin_axes",
    "culture_axis",
    "get_axis",
]
