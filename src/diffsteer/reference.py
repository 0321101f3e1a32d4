"""Labelled reference images, the ground truth against which the audit's classifier is checked.

Two sources:

* a bundled model's own reference set, registered with it (:mod:`diffsteer.registry`), e.g. fresh
  renders whose attributes are known by construction;
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
    "ReferenceError",
    "ReferenceSet",
    "load_reference_folder",
]

LABELS_FILE = "labels.csv"


class ReferenceError(ValueError):
    """A reference folder is missing, or its labels.csv is malformed (the message names file and line)."""


@dataclass
class ReferenceSet:
    """Images with their true labels per axis (``labels[axis][i]`` is image i's class, or None)."""

    source: str
    images: list[Image.Image]
    labels: dict[str, list[str | None]]
    info: dict[str, Any] = field(default_factory=dict)


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
