"""Attribute axes (gender, skin tone, culture, user-defined) and the CLIP prompts that label them.

The prompts live in ``axes.yaml`` rather than in code so that an audit's exact wording is reviewable
data; the built-in gender and skin-tone prompts are ENTIGEN's (EMNLP 2022), verbatim, so results stay
comparable with the paper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

UNCERTAIN = "uncertain"
"""Label given when an axis's uncertain prompt wins the softmax; counted apart from the class shares."""

_ALLOWED_KEYS = {"description", "classes", "template", "uncertain"}


class UnknownAxisError(ValueError):
    """Raised for an axis name that is not built in."""


class AxisSpecError(ValueError):
    """Raised when an axis definition (YAML mapping or constructor arguments) is malformed."""


@dataclass(frozen=True)
class Axis:
    """One attribute axis: its classes, one CLIP prompt per class and an optional uncertain prompt."""

    name: str
    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    uncertain_prompt: str | None
    description: str = ""

    def __post_init__(self) -> None:
        # Accept lists from callers but store tuples, so axes stay hashable and immutable.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "prompts", tuple(self.prompts))
        where = f"axis {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise AxisSpecError(f"axis name must be a non-empty string, got {self.name!r}")
        if len(self.classes) < 2:
            raise AxisSpecError(f"{where}: needs at least 2 classes, got {len(self.classes)}")
        if len(self.prompts) != len(self.classes):
            raise AxisSpecError(
                f"{where}: {len(self.classes)} classes but {len(self.prompts)} prompts (need one per class)"
            )
        for cls in self.classes:
            if not isinstance(cls, str) or not cls.strip():
                raise AxisSpecError(f"{where}: class names must be non-empty strings, got {cls!r}")
            if cls.strip().lower() == UNCERTAIN:
                raise AxisSpecError(
                    f"{where}: {UNCERTAIN!r} is reserved for the uncertain prompt; it cannot be a class"
                )
        if len(set(self.classes)) != len(self.classes):
            raise AxisSpecError(f"{where}: duplicate class names in {list(self.classes)}")
        all_prompts = list(self.prompts)
        if self.uncertain_prompt is not None:
            all_prompts.append(self.uncertain_prompt)
        for prompt in all_prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise AxisSpecError(f"{where}: prompts must be non-empty strings, got {prompt!r}")
        if len(set(all_prompts)) != len(all_prompts):
            # Two identical prompts would split one class's probability between two labels.
            raise AxisSpecError(f"{where}: prompts must be distinct, got {all_prompts}")

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label the classifier can give: the classes, then ``"uncertain"`` if the axis has it."""
        return self.classes + ((UNCERTAIN,) if self.uncertain_prompt is not None else ())

    @property
    def all_prompts(self) -> tuple[str, ...]:
        """Prompts in the same order as :attr:`labels`."""
        return self.prompts + ((self.uncertain_prompt,) if self.uncertain_prompt is not None else ())


@cache
def _spec() -> dict[str, Any]:
    text = resources.files("diffsteer.attributes").joinpath("axes.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


PERSON_PROMPT: str = _spec()["person_filter"]["person"]
"""ENTIGEN's person-filter prompt: an image is labelled only if this beats :data:`OBJECT_PROMPT`."""
OBJECT_PROMPT: str = _spec()["person_filter"]["object"]
"""ENTIGEN's contrast prompt for the person filter."""


def axis_from_mapping(name: str, mapping: Mapping[str, Any]) -> Axis:
    """Build an axis from a YAML-style mapping so users can audit attributes we do not ship.

    Accepted keys: ``classes`` (``{class: prompt}``, or a list of class names together with a
    ``template`` containing ``{}``), optional ``uncertain`` (a prompt, or null for none) and optional
    ``description``. Anything else is rejected so that typos do not silently change an audit.
    """
    where = f"axis {name!r}"
    if not isinstance(mapping, Mapping):
        raise AxisSpecError(f"{where}: expected a mapping, got {type(mapping).__name__}")
    unknown = sorted(set(mapping) - _ALLOWED_KEYS)
    if unknown:
        raise AxisSpecError(f"{where}: unknown keys {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
    if "classes" not in mapping:
        raise AxisSpecError(f"{where}: missing 'classes' (a mapping of class name to prompt)")
    raw = mapping["classes"]
    template = mapping.get("template")
    if isinstance(raw, Mapping):
        if template is not None:
            raise AxisSpecError(f"{where}: 'template' is only used with a list of classes, not a mapping")
        classes = [str(c).strip() if isinstance(c, str) else c for c in raw]
        prompts = list(raw.values())
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise AxisSpecError(f"{where}: a list of classes needs a 'template' with exactly one '{{}}'")
        classes = [str(c).strip() if isinstance(c, str) else c for c in raw]
        if not all(isinstance(c, str) for c in classes):
            raise AxisSpecError(f"{where}: class names must be strings, got {list(raw)}")
        prompts = [template.replace("{}", c) for c in classes]
    else:
        raise AxisSpecError(f"{where}: 'classes' must be a mapping of class name to prompt")
    uncertain = mapping.get("uncertain")
    if uncertain is not None and not isinstance(uncertain, str):
        raise AxisSpecError(f"{where}: 'uncertain' must be a prompt string or null, got {uncertain!r}")
    description = mapping.get("description", "") or ""
    if not isinstance(description, str):
        raise AxisSpecError(f"{where}: 'description' must be a string")
    return Axis(
        name=name,
        classes=tuple(classes),
        prompts=tuple(prompts),
        uncertain_prompt=uncertain,
        description=description.strip(),
    )


def culture_axis(classes: Sequence[str] | Mapping[str, str]) -> Axis:
    """The culture axis over the given classes (names fill the built-in template; a mapping gives prompts)."""
    spec = _spec()["axes"]["culture"]
    mapping: dict[str, Any] = {"uncertain": spec["uncertain"], "description": spec["description"]}
    if isinstance(classes, Mapping):
        mapping["classes"] = dict(classes)
    else:
        if isinstance(classes, str):
            raise AxisSpecError("axis 'culture': classes must be a list of names, not one string")
        mapping["classes"] = list(classes)
        mapping["template"] = spec["template"]
    return axis_from_mapping("culture", mapping)


def builtin_axes() -> dict[str, Axis]:
    """The shipped axes by name: gender, skin_tone, culture (with its default classes) and violence."""
    axes: dict[str, Axis] = {}
    for name, spec in _spec()["axes"].items():
        if name == "culture":
            axes[name] = culture_axis(spec["default_classes"])
        else:
            axes[name] = axis_from_mapping(name, spec)
    return axes


def get_axis(name: str, *, culture_classes: Sequence[str] | Mapping[str, str] | None = None) -> Axis:
    """Look up a built-in axis; ``culture_classes`` replaces culture's default classes (ignored otherwise)."""
    key = name.strip().lower().replace("-", "_")
    axes = builtin_axes()
    if key not in axes:
        raise UnknownAxisError(f"unknown axis {name!r}; known axes: {', '.join(sorted(axes))}")
    if key == "culture" and culture_classes is not None:
        return culture_axis(culture_classes)
    return axes[key]
