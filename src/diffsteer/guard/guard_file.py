"""Guard files: a trained decoder's weights plus the metadata that binds it to one text encoder.

One safetensors file (read without unpickling); its metadata is a flat str -> str map holding the
decoder's shape, the text encoder's fingerprint, the judge's threshold and how the decoder was trained
(JSON strings for structured values). Like a steering file it is refused, with one line, by a model
whose text encoder differs from the one it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffsteer.guard.decoder import CaptionDecoder, DecoderShape

__all__ = ["GUARD_KIND", "GuardFileError", "GuardMismatchError", "check_encoder", "read_guard", "save_guard"]

GUARD_KIND = "guard"
FORMAT_VERSION = "1"
_JSON_KEYS = ("decoder_shape", "record")  # the rest are plain strings (a hex fingerprint must stay one)


class GuardFileError(ValueError):
    """A guard file that cannot be read: missing, not safetensors, or not a diffsteer guard."""


class GuardMismatchError(ValueError):
    """A guard file trained on another text encoder than the model's."""


def save_guard(path: Path | str, decoder: CaptionDecoder, metadata: dict[str, Any]) -> Path:
    """Publish the decoder's weights and ``metadata`` atomically.

    ``metadata``: plain strings (``text_encoder_fingerprint``, ``base_model``) and ``record``, a
    JSON-ready dict (threshold, training recipe and figures).
    """
    from safetensors.torch import save

    from diffsteer.runs.atomic import atomic_write_bytes

    meta = {"diffsteer_kind": GUARD_KIND, "diffsteer_format": FORMAT_VERSION}
    meta["decoder_shape"] = json.dumps(decoder.shape.to_dict())
    for key, value in metadata.items():
        if key in _JSON_KEYS:
            meta[key] = json.dumps(value)
        elif isinstance(value, str):
            meta[key] = value
        else:
            raise TypeError(f"guard metadata {key!r} must be a string (or go inside 'record')")
    tensors, seen = {}, set()
    for key, value in decoder.state_dict().items():
        if value.data_ptr() in seen:  # a tied weight (the output head is the input embedding): once
            continue
        seen.add(value.data_ptr())
        tensors[key] = value.detach().to("cpu").contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def read_guard(path: Path | str) -> tuple[CaptionDecoder, dict[str, Any]]:
    """The decoder (in eval mode) and the decoded metadata; one-line GuardFileError on any failure."""
    from diffsteer.steering.files import read_safetensors

    path = Path(path)
    tensors, raw = read_safetensors(path, GuardFileError, f"guard file not found: {path}")
    if raw.get("diffsteer_kind") != GUARD_KIND:
        raise GuardFileError(f"{path} is not a diffsteer guard file (diffsteer_kind is not 'guard')")
    metadata: dict[str, Any] = dict(raw)
    try:
        for key in _JSON_KEYS:
            metadata[key] = json.loads(raw[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise GuardFileError(f"{path} has damaged guard metadata ({type(exc).__name__}: {exc})") from None
    try:
        decoder = CaptionDecoder(DecoderShape(**metadata["decoder_shape"]))
        missing, unexpected = decoder.load_state_dict(tensors, strict=False)
        tied = {"lm.lm_head.weight"}
        if unexpected or set(missing) - tied:
            raise ValueError(
                f"missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
    except (TypeError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GuardFileError(f"{path} holds a damaged guard decoder ({first})") from None
    return decoder.eval(), metadata


def check_encoder(metadata: dict[str, Any], *, fingerprint: str, source: str) -> None:
    """Refuse a guard trained on another text encoder (see embeddings.text_encoder_fingerprint)."""
    made_for = str(metadata.get("text_encoder_fingerprint"))
    if made_for != fingerprint:
        base = metadata.get("base_model", "an unknown model")
        raise GuardMismatchError(
            f"{source} was trained for {base} (text encoder fingerprint {made_for}), "
            f"not for this model's text encoder (fingerprint {fingerprint})"
        )
