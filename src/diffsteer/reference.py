"""Labelled reference images, the ground truth against which the audit's classifier is checked.

Two sources:

* pictoworld renders: fresh pictures from :mod:`diffsteer.pictoworld.render` whose attributes are
  known by construction (deterministic from a seed; each axis drawn 50/50 so every class has a row);
* a user folder ``DIR`` holding images and ``DIR/labels.csv`` with a header line ``file,axis,label``
  and one row per (image, axis): ``file`` is a path relative to ``DIR``, ``axis`` an axis name
  (gender, skin_tone, culture, ...), ``label`` that axis's true class. An image may have rows for
  several axes; axes and classes the audit does not use are ignored when checking it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = [
    "LABELS_FILE",
    "PICTOWORLD_REFERENCE_SIZE",
    "ReferenceError",
    "ReferenceSet",
    "load_reference_folder",
    "pictoworld_reference",
]

LABELS_FILE = "labels.csv"
PICTOWORLD_REFERENCE_SIZE = 400
PICTOWORLD_REFERENCE_SEED = 20_231_123


class ReferenceError(ValueError):
    """A reference folder is missing, or its labels.csv is malformed (the message names file and line)."""


@dataclass
class ReferenceSet:
    """Images with their true labels per axis (``labels[axis][i]`` is image i's class, or None)."""

    source: str
    images: list[Image.Image]
    labels: dict[str, list[str | None]]
    info: dict[str, Any] = field(default_factory=dict)


def pictoworld_reference(
    n: int = PICTOWORLD_REFERENCE_SIZE, seed: int = PICTOWORLD_REFERENCE_SEED
) -> ReferenceSet:
    """``n`` fresh pictoworld renders of people, every axis drawn 50/50, professions uniform."""
    import numpy as np

    from diffsteer.pictoworld import world
    from diffsteer.pictoworld.render import render

    rng = np.random.default_rng(seed)
    professions = [None, *world.PROFESSIONS]
    scenes = [
        world.sample_person(
            rng, professions[rng.integers(len(professions))], balanced=("gender", "skin_tone", "culture")
        )
        for _ in range(n)
    ]
    seeds = rng.integers(0, 2**31, size=n).tolist()
    images = [Image.fromarray(render(scene, s)) for scene, s in zip(scenes, seeds, strict=True)]
    return ReferenceSet(
        source="pictoworld renders",
        images=images,
        labels={
            "gender": [s.gender for s in scenes],
            "skin_tone": [s.skin for s in scenes],
            "culture": [s.culture for s in scenes],
        },
        info={"n": n, "seed": seed, "note": "fresh renders with known attributes, each axis drawn 50/50"},
    )


def load_reference_folder(folder: Path | str) -> ReferenceSet:
    """Read ``folder/labels.csv`` (``file,axis,label``) and the images it names."""
    folder = Path(folder)
    path = folder / LABELS_FILE
    if not path.is_file():
        raise ReferenceError(
            f"no {LABELS_FILE} in reference folder {folder} (expected columns file,axis,label)"
        )
    order: dict[str, int] = {}
    rows: list[tuple[str, str, str]] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if header != ["file", "axis", "label"]:
            raise ReferenceError(f"{path}:1: the header must be 'file,axis,label', got {','.join(header)!r}")
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3 or not all(cell.strip() for cell in row):
                raise ReferenceError(f"{path}:{line}: expected three non-empty fields file,axis,label")
            name, axis, label = (cell.strip() for cell in row)
            if not (folder / name).is_file():
                raise ReferenceError(f"{path}:{line}: image {name!r} not found in {folder}")
            order.setdefault(name, len(order))
            rows.append((name, axis, label))
    if not rows:
        raise ReferenceError(f"{path} lists no images")
    labels: dict[str, list[str | None]] = {}
    for name, axis, label in rows:
        column = labels.setdefault(axis, [None] * len(order))
        if column[order[name]] not in (None, label):
            raise ReferenceError(f"{path}: {name!r} has two labels on axis {axis!r}")
        column[order[name]] = label
    images = []
    for name in order:
        try:
            with Image.open(folder / name) as img:
                images.append(img.convert("RGB"))
        except OSError as exc:
            raise ReferenceError(f"{path}: cannot read image {name!r}: {exc}") from None
    return ReferenceSet(
        source=f"labelled folder {folder}",
        images=images,
        labels=labels,
        info={"n": len(images), "path": str(folder.resolve())},
    )
