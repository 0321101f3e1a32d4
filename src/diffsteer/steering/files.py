"""Steering files: learned tensors plus the metadata that says which model they belong to.

Every learned mitigation (an h-space vector, a noise direction, a text-embedding offset) is saved as
one safetensors file named ``<name>.<kind>.safetensors``. Safetensors metadata is a flat str -> str
map; structured values (shapes, recipes, curves) are stored as JSON strings. Reading never unpickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

KINDS = ("hspace", "noise", "text")
ANTI_CONCEPT_KIND = "hspace"
"""Anti-concepts (``anti-*`` files, applied by safe generation) are h-space vectors (Li et al.)."""
SUFFIX = ".safetensors"
FORMAT_VERSION = "1"


class SteeringFileError(ValueError):
    """A steering file that cannot be read: missing, not safetensors, or missing required metadata."""


class SteeringMismatchError(ValueError):
    """A steering file made for another model (U-Net fingerprint, block or shape differs)."""


def steering_filename(name: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown steering kind '{kind}'; expected one of {', '.join(KINDS)}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid steering name '{name}': use letters, digits, '-' or '_'")
    return f"{name}.{kind}{SUFFIX}"


def save_steering_file(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write tensors (made contiguous, on CPU) and metadata (non-strings JSON-encoded) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    kind = metadata.get("diffsteer_kind")
    if kind not in KINDS:
        raise ValueError(f"metadata needs diffsteer_kind in {KINDS}, got {kind!r}")
    meta = {"diffsteer_format": FORMAT_VERSION}
    for key, value in metadata.items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_safetensors(
    path: Path | str, error: type[Exception], missing: str, *, with_tensors: bool = True
) -> tuple[dict[str, torch.Tensor] | None, dict[str, str]]:
    """(tensors, raw string metadata) of a safetensors file, never unpickling anything.

    Every failure is one line raised as ``error``: ``missing`` when there is no file, else why the
    file cannot be read. ``with_tensors=False`` reads only the header (tensors None).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise error(missing)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path)) if with_tensors else None
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path} is not a readable safetensors file ({exc})") from None
    return tensors, metadata


def read_steering_file(path: Path | str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a steering file: (tensors, raw string metadata). One-line errors for every failure."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, SteeringFileError, f"steering file not found: {path}")
    kind = metadata.get("diffsteer_kind")
    if kind not in KINDS:
        raise SteeringFileError(f"{path} is not a diffsteer steering file (no diffsteer_kind)")
    return tensors, metadata


def meta_json(metadata: dict[str, str], key: str, default: Any = None) -> Any:
    """A JSON-encoded metadata value, decoded; ``default`` when absent."""
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        return metadata[key]


def check_model(metadata: dict[str, str], *, fingerprint: str, source: str) -> None:
    """Refuse a file learned on a U-Net of another architecture (see models.model_fingerprint)."""
    made_for = metadata.get("fingerprint")
    if made_for != fingerprint:
        base = metadata.get("base_model", "an unknown model")
        raise SteeringMismatchError(
            f"{source} was made for {base} (U-Net fingerprint {made_for}), "
            f"not for this model (fingerprint {fingerprint})"
        )


def check_shape(tensor: torch.Tensor, expected: tuple[int, ...], *, source: str, what: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise SteeringMismatchError(
            f"{source} holds a {what} of shape {tuple(tensor.shape)}, but this model needs {tuple(expected)}"
        )
