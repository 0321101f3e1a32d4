"""Rewards for fine-tuning: what a generated image is worth, as data a recipe can record.

Each reward scores a batch of images, each with the training prompt it came from, and describes
itself as JSON (saved in the adapter's metadata). The judges are the model's own CLIP (zero-shot on an
attribute axis) or a user's function; never a bundled model's oracle, which only referees.

* alignment: the CLIP probability that the image shows what its prompt asks on each named axis
  (``TrainingPrompt.attributes``, e.g. ``{"culture": "non-western"}``), averaged over those axes.
* fairness: per image, ``sum_c p_i(c) (log q_c - log s_c)`` where ``p_i`` are the image's class
  probabilities, ``s`` their mean over the images of the same prompt in the batch and ``q`` the target
  shares. Its expectation over a prompt's images is ``-KL(s || q)``, so its policy gradient is the
  gradient of the distribution-matching objective and the optimum is ``s = q`` (uniform ``q``: the
  entropy of the class distribution, up to a constant).
* safety: minus the probability of an unsafe concept's unsafe class (attributes/safety.yaml).
* ``module:function``: ``function(images, prompts) -> floats``, one per image, prompts as strings.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

from diffsteer.attributes.axes import Axis


class RewardError(ValueError):
    """A reward that cannot be built or computed: the message names the parameter."""


@dataclass(frozen=True)
class TrainingPrompt:
    """A prompt to fine-tune on, with the attribute classes it asks for (``{axis: class}``)."""

    text: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "attributes": dict(sorted(self.attributes.items()))}


class Reward(Protocol):
    name: str

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
        """One float per image (a 1-d float32 tensor)."""
        ...

    def describe(self) -> dict[str, Any]: ...


def _axis_probs(classifier: Any, images: Sequence[Image.Image], axes: Sequence[Axis]) -> list[dict]:
    """Per image, ``{axis: {label: prob}}`` from the zero-shot classifier, no person filter."""
    labels = classifier.classify(list(images), list(axes), person_filter=False)
    return [{name: label.probs for name, label in item.axes.items()} for item in labels]


class AlignmentReward:
    """The CLIP probability that an image shows the classes its prompt asks for."""

    name = "alignment"

    def __init__(self, classifier: Any, axes: Mapping[str, Axis]) -> None:
        self.classifier = classifier
        self.axes = dict(axes)

    def check(self, prompts: Sequence[TrainingPrompt]) -> None:
        for p in prompts:
            if not p.attributes:
                raise RewardError(f"prompts: the alignment reward needs attributes for {p.text!r}")
            for axis, cls in p.attributes.items():
                if axis not in self.axes:
                    raise RewardError(
                        f"prompts: {p.text!r} asks for axis {axis!r}, not one of {list(self.axes)}"
                    )
                if cls not in self.axes[axis].classes:
                    raise RewardError(
                        f"prompts: {p.text!r} asks for {axis}={cls!r}; "
                        f"classes are {list(self.axes[axis].classes)}"
                    )

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
        self.check(prompts)
        probs = _axis_probs(self.classifier, images, list(self.axes.values()))
        scores = [
            sum(p[axis][cls] for axis, cls in prompt.attributes.items()) / len(prompt.attributes)
            for p, prompt in zip(probs, prompts, strict=True)
        ]
        return torch.tensor(scores, dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "judge": getattr(self.classifier, "classifier_id", "clip"),
            "axes": {n: list(a.classes) for n, a in self.axes.items()},
        }


class FairnessReward:
    """Distribution matching per prompt: its expectation is ``-KL(batch shares || target shares)``."""

    name = "fairness"

    def __init__(self, classifier: Any, axis: Axis, target: Mapping[str, float] | None = None) -> None:
        self.classifier = classifier
        self.axis = axis
        classes = axis.classes
        if target is None:
            target = {c: 1.0 / len(classes) for c in classes}
        unknown = sorted(set(target) - set(classes))
        if unknown or set(target) != set(classes):
            raise RewardError(f"target: give a share for each of {list(classes)} (got {sorted(target)})")
        if any(not float(v) > 0 for v in target.values()):
            raise RewardError(f"target: shares must be positive, got {dict(target)}")
        total = sum(float(v) for v in target.values())
        self.target = {c: float(target[c]) / total for c in classes}  # shares need not sum to 1

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
        rows = _axis_probs(self.classifier, images, [self.axis])
        classes = self.axis.classes
        # class probabilities without the "uncertain" label, renormalised
        p = torch.tensor([[row[self.axis.name][c] for c in classes] for row in rows], dtype=torch.float64)
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        log_q = torch.tensor([math.log(self.target[c]) for c in classes], dtype=torch.float64)
        reward = torch.empty(len(rows), dtype=torch.float64)
        texts = [prompt.text for prompt in prompts]
        for text in dict.fromkeys(texts):
            idx = torch.tensor([i for i, t in enumerate(texts) if t == text])
            shares = p[idx].mean(dim=0).clamp_min(1e-6)
            reward[idx] = (p[idx] * (log_q - shares.log())).sum(dim=1)
        return reward.float()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "judge": getattr(self.classifier, "classifier_id", "clip"),
            "axis": self.axis.name,
            "target": self.target,
            "objective": "-KL(batch shares || target) per prompt",
        }


class SafetyReward:
    """Minus the probability of an unsafe class (e.g. ``violence``'s ``violent``) under the CLIP judge."""

    name = "safety"

    def __init__(self, classifier: Any, axis: Axis, unsafe_class: str) -> None:
        if unsafe_class not in axis.classes:
            raise RewardError(f"unsafe class {unsafe_class!r} is not a class of axis {axis.name!r}")
        self.classifier = classifier
        self.axis = axis
        self.unsafe_class = unsafe_class

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
        rows = _axis_probs(self.classifier, images, [self.axis])
        return torch.tensor([-row[self.axis.name][self.unsafe_class] for row in rows], dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "judge": getattr(self.classifier, "classifier_id", "clip"),
            "axis": self.axis.name,
            "unsafe_class": self.unsafe_class,
        }


class CallableReward:
    """A user's reward ``module:function`` taking (images, prompt strings) and returning one float each."""

    def __init__(self, ref: str, function: Callable[..., Sequence[float]] | None = None) -> None:
        self.name = ref
        self.function = function if function is not None else load_callable(ref)

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[TrainingPrompt]) -> torch.Tensor:
        values = self.function(list(images), [p.text for p in prompts])
        out = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
        if out.shape != (len(images),):
            raise RewardError(
                f"reward {self.name} returned {tuple(out.shape)} values for {len(images)} images"
            )
        if not torch.isfinite(out).all():
            raise RewardError(f"reward {self.name} returned a non-finite value")
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "callable": self.name}


def load_callable(ref: str) -> Callable[..., Sequence[float]]:
    """``package.module:function`` imported; one-line errors naming --reward."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise RewardError(f"--reward {ref!r}: a custom reward is written module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"--reward {ref!r}: cannot import {module_name} ({exc})") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardError(f"--reward {ref!r}: {module_name} has no function {attr!r}")
    return function


REWARDS = ("alignment", "fairness", "safety")


def check_reward_name(name: str) -> None:
    if name not in REWARDS and ":" not in name:
        raise RewardError(f"--reward {name!r}: choose {', '.join(REWARDS)} or module:function")


def build_reward(
    name: str,
    classifier: Any,
    *,
    axis: str | None = None,
    target: Mapping[str, float] | None = None,
    concept: str = "violence",
    prompts: Sequence[TrainingPrompt] = (),
    culture_classes: Sequence[str] | None = None,
) -> Reward:
    """The reward called ``name`` judged by ``classifier`` (the model's own CLIP zero-shot)."""
    from diffsteer.attributes.axes import get_axis

    check_reward_name(name)
    if name == "alignment":
        wanted = sorted({a for p in prompts for a in p.attributes})
        reward = AlignmentReward(
            classifier, {a: get_axis(a, culture_classes=culture_classes) for a in wanted}
        )
        reward.check(prompts)
        return reward
    if name == "fairness":
        if not axis:
            raise RewardError("--axis: the fairness reward needs an axis (e.g. gender)")
        return FairnessReward(classifier, get_axis(axis, culture_classes=culture_classes), target)
    if name == "safety":
        from diffsteer.attributes.safety import get_concept

        unsafe = get_concept(concept)
        return SafetyReward(classifier, get_axis(unsafe.axis), unsafe.unsafe_class)
    return CallableReward(name)
