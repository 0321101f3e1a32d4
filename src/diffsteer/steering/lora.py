"""LoRA adapters on the U-Net's attention (and, optionally, the text encoders'): add one for training,
save it so diffusers loads it, load it back.

A fine-tune (``diffsteer finetune``) ships as a folder holding ``pytorch_lora_weights.safetensors`` in
diffusers' own LoRA layout, so ``pipe.load_lora_weights(folder)`` works without diffsteer. The same
safetensors file carries diffsteer's metadata beside diffusers' (``lora_adapter_metadata``): the
method, the reward, the recipe, and the fingerprints of the base model it was trained on. diffsteer
loads an adapter through diffusers' ``load_lora_weights`` too (so its images equal a plain pipeline's),
after refusing, in one line, an adapter made for another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
ADAPTER_KIND = "lora"
TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as diffusers' examples
# What an adapter may change (``--lora-scope``): every attention projection (self- and cross-attention),
# or only the cross-attention's key and value projections, which act on the text tokens alone (diffusers
# names a transformer block's cross-attention ``attn2``, on SD1, SDXL and the bundled models alike).
LORA_SCOPES: dict[str, tuple[str, ...]] = {
    "all": TARGET_MODULES,
    "cross-attention": ("attn2.to_k", "attn2.to_v"),
}
# The text encoders' attention projections (CLIP's names), the modules diffusers' own LoRA training
# examples adapt with --train_text_encoder; SDXL has two text encoders, both adapted.
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
PEFT_HINT = "LoRA fine-tuning needs peft: pip install 'diffsteer[finetune]'"
CURVE_KEY = "training_curve"  # metadata: the training's reward and KL per update, [{iteration, reward, kl}]
RUN_RECIPE_FILE = "recipe.json"  # what the run folder around an adapter holds (experiments/finetune.py)
RUN_HISTORY_FILE = "history.json"


class PeftUnavailableError(ImportError):
    """peft is missing, or too old for the transformers installed; the message names the fix."""


class AdapterFileError(ValueError):
    """A LoRA folder that cannot be used: missing, unreadable, or not made by diffsteer."""


class AdapterMismatchError(ValueError):
    """A LoRA adapter trained on another base model (architecture or weights differ)."""


def require_peft() -> None:
    """Fail in one line, with the extra to install, when peft is missing."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise PeftUnavailableError(PEFT_HINT) from None


def require_text_encoder_peft() -> None:
    """Fail in one line when transformers' PEFT integration, which every text-encoder adapter goes
    through (diffusers' ``load_lora_weights`` included), refuses the installed peft: transformers 5.24
    asks for peft 0.22, newer than any release on PyPI as of December 2026."""
    require_peft()
    from importlib.metadata import version

    from packaging.version import Version

    try:
        from transformers.integrations.peft import MIN_PEFT_VERSION
    except ImportError:  # an integration without the constant: nothing to compare
        return
    have = version("peft")
    if Version(have) < Version(MIN_PEFT_VERSION):
        raise PeftUnavailableError(
            f"a text-encoder LoRA needs peft >= {MIN_PEFT_VERSION} with transformers "
            f"{version('transformers')} (peft {have} is installed): pip install 'diffsteer[finetune]', "
            "which keeps transformers below 5.24"
        )


def check_scope(scope: str) -> tuple[str, ...]:
    """The module names (peft matches them as dotted suffixes) of a ``--lora-scope``; one-line error."""
    if scope not in LORA_SCOPES:
        raise ValueError(f"lora scope {scope!r}: choose {' or '.join(LORA_SCOPES)}")
    return LORA_SCOPES[scope]


def add_lora(unet: torch.nn.Module, *, rank: int, scope: str = "all", adapter_name: str = "default") -> None:
    """Add a trainable LoRA adapter (rank ``rank``, alpha = rank) to the U-Net's attention projections
    that ``scope`` names (:data:`LORA_SCOPES`).

    Only the LoRA matrices require gradients afterwards. ``init_lora_weights="gaussian"`` leaves B = 0,
    so the adapted U-Net starts exactly at the base model.
    """
    require_peft()
    from peft import LoraConfig

    targets = check_scope(scope)
    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    unet.requires_grad_(False)
    config = LoraConfig(
        r=int(rank), lora_alpha=int(rank), init_lora_weights="gaussian", target_modules=list(targets)
    )
    unet.add_adapter(config, adapter_name=adapter_name)


def text_encoders(pipe: Any) -> dict[str, torch.nn.Module]:
    """The pipeline's text encoders by component name (one for SD1/2, two for SDXL)."""
    return {name: getattr(pipe, name) for name in TEXT_ENCODERS if getattr(pipe, name, None) is not None}


def add_text_encoder_lora(pipe: Any, *, rank: int, adapter_name: str = "default") -> None:
    """Add a trainable LoRA adapter (rank ``rank``, alpha = rank, starting at the base model) to every
    text encoder's attention projections, as diffusers' examples do with ``--train_text_encoder``."""
    require_text_encoder_peft()
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"rank must be at least 1, got {rank}")
    for encoder in text_encoders(pipe).values():
        encoder.requires_grad_(False)
        config = LoraConfig(
            r=int(rank), lora_alpha=int(rank), init_lora_weights="gaussian",
            target_modules=list(TEXT_ENCODER_TARGETS),
        )  # fmt: skip
        encoder.add_adapter(config, adapter_name=adapter_name)


def adapted_text_encoders(pipe: Any, adapter_name: str = "default") -> dict[str, torch.nn.Module]:
    """The text encoders that carry the adapter ``adapter_name``."""
    return {
        name: encoder
        for name, encoder in text_encoders(pipe).items()
        if adapter_name in (getattr(encoder, "peft_config", None) or {})
    }


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for name, p in model.named_parameters() if "lora_" in name and p.requires_grad]


def lora_state_dict(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors of a U-Net or text encoder in diffusers' layout (no component prefix), on
    the CPU, float32."""
    require_peft()
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model, adapter_name=adapter_name))
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def peft_state(model: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's own layout (for a training checkpoint), on the CPU."""
    require_peft()
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_peft_state(
    model: torch.nn.Module, state: dict[str, torch.Tensor], adapter_name: str = "default"
) -> None:
    """Put tensors saved by :func:`peft_state` back into a model that has the same adapter."""
    require_peft()
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise AdapterFileError(f"adapter tensors do not fit this model: {len(unexpected)} unexpected keys")


def load_lora_state(
    unet: torch.nn.Module, state: dict[str, torch.Tensor], adapter_name: str = "default"
) -> None:
    """Put tensors saved by :func:`lora_state_dict` back into a U-Net that has the same adapter."""
    require_peft()
    from diffusers.utils import convert_unet_state_dict_to_peft

    load_peft_state(unet, convert_unet_state_dict_to_peft(state), adapter_name)


def _adapter_config(model: torch.nn.Module, adapter_name: str) -> dict[str, Any]:
    config = model.peft_config[adapter_name].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}


def save_adapter(
    pipe: Any,
    folder: Path | str,
    metadata: dict[str, Any],
    *,
    adapter_name: str = "default",
) -> Path:
    """Save the U-Net's adapter (and the text encoders', where they carry it) as
    ``folder/pytorch_lora_weights.safetensors``, written atomically.

    The file is what ``StableDiffusionPipeline.save_lora_weights`` (or SDXL's) writes, plus diffsteer's
    ``metadata`` (non-strings JSON-encoded) beside diffusers' own adapter config.
    """
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors.torch import save_file

    folder = Path(folder)
    meta = {"format": "pt", "diffsteer_kind": ADAPTER_KIND}
    encoders = adapted_text_encoders(pipe, adapter_name)
    # diffusers reads the adapter config per component, keys prefixed with the component's name
    config = {f"unet.{k}": v for k, v in _adapter_config(pipe.unet, adapter_name).items()}
    for name, encoder in encoders.items():
        config |= {f"{name}.{k}": v for k, v in _adapter_config(encoder, adapter_name).items()}
    meta[LORA_ADAPTER_METADATA_KEY] = json.dumps(config, sort_keys=True)
    for key, value in metadata.items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)

    def write(weights: dict[str, torch.Tensor], filename: str) -> None:
        tmp = f"{filename}.tmp"
        save_file({k: v.contiguous() for k, v in weights.items()}, tmp, metadata=meta)
        os.replace(tmp, filename)

    type(pipe).save_lora_weights(
        save_directory=str(folder),
        unet_lora_layers=lora_state_dict(pipe.unet, adapter_name),
        **{f"{name}_lora_layers": lora_state_dict(model, adapter_name) for name, model in encoders.items()},
        weight_name=WEIGHT_NAME,
        save_function=write,
        safe_serialization=True,
    )
    return folder / WEIGHT_NAME


def adapter_file(folder: Path | str) -> Path:
    path = Path(folder).expanduser()
    return path / WEIGHT_NAME if path.is_dir() else path


def read_adapter_metadata(folder: Path | str) -> dict[str, str]:
    """The string metadata of a diffsteer LoRA folder (or its weights file); one-line errors."""
    from diffsteer.steering.files import read_safetensors

    path = adapter_file(folder)
    missing = f"LoRA adapter not found: {path} (expected a folder holding {WEIGHT_NAME})"
    _, metadata = read_safetensors(path, AdapterFileError, missing, with_tensors=False)
    if metadata.get("diffsteer_kind") != ADAPTER_KIND:
        raise AdapterFileError(f"{path} is not a diffsteer LoRA adapter (no diffsteer_kind=lora metadata)")
    return metadata


def check_loadable(metadata: dict[str, str]) -> None:
    """Refuse, in one line and before any model loads, an adapter this environment cannot load."""
    if metadata.get("text_encoder_lora") == "true":
        require_text_encoder_peft()


def adapter_digest(folder: Path | str) -> str:
    """Hash of the adapter file's bytes: a run store's identity for images made with it."""
    digest = hashlib.sha256()
    with open(adapter_file(folder), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def base_weights_fingerprint(unet: torch.nn.Module) -> str:
    """Hash of the U-Net's own weights (a sample of every tensor), blind to any LoRA adapter on it,
    so an adapter's base model is recognised whether or not adapters are loaded already."""
    digest = hashlib.sha256()
    for name, tensor in unet.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        flat = tensor.detach().flatten()
        idx = torch.linspace(0, flat.numel() - 1, steps=min(64, flat.numel())).long().to(flat.device)
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(flat[idx].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def base_model_metadata(pipe: Any, ref: str) -> dict[str, str]:
    """What an adapter records of its base model (checked by :func:`check_adapter`)."""
    from diffsteer.models import model_fingerprint

    return {
        "base_model": ref,
        "pipeline": type(pipe).__name__,
        "fingerprint": model_fingerprint(pipe),
        "unet_weights": base_weights_fingerprint(pipe.unet),
    }


def check_adapter(metadata: dict[str, str], pipe: Any, *, source: str) -> None:
    """Refuse an adapter trained on another base model: another U-Net architecture always, other
    weights when the U-Net is in float32 (the weights fingerprint samples float32 values)."""
    from diffsteer.models import model_fingerprint

    made_for = metadata.get("fingerprint")
    if made_for != model_fingerprint(pipe):
        raise AdapterMismatchError(
            f"{source} was trained on {metadata.get('base_model', 'an unknown model')} (U-Net fingerprint "
            f"{made_for}), not on this model (fingerprint {model_fingerprint(pipe)})"
        )
    weights = metadata.get("unet_weights")
    if weights and pipe.unet.dtype == torch.float32:
        own = base_weights_fingerprint(pipe.unet)
        if weights != own:
            raise AdapterMismatchError(
                f"{source} was trained on other weights of this architecture ({metadata.get('base_model')}, "
                f"U-Net weights {weights}; this model's are {own})"
            )


def adapter_name_for(folder: Path | str) -> str:
    """A stable, valid adapter name for a folder (its resolved path hashed)."""
    resolved = str(Path(folder).expanduser().resolve())
    return "diffsteer_" + hashlib.sha256(resolved.encode()).hexdigest()[:12]


def load_adapter(pipe: Any, folder: Path | str) -> str:
    """Check the adapter against ``pipe`` and load it with diffusers' ``load_lora_weights``.

    Returns the adapter name; loading the same folder twice loads it once. The adapter is inactive
    until :func:`use_adapter` names it.
    """
    require_peft()
    metadata = read_adapter_metadata(folder)
    check_loadable(metadata)
    check_adapter(metadata, pipe, source=str(folder))
    name = adapter_name_for(folder)
    loaded = getattr(pipe.unet, "peft_config", None) or {}
    if name not in loaded:
        from diffusers.utils import logging as diffusers_logging

        path = adapter_file(folder)
        # diffusers warns when the file has no text-encoder LoRA: by design, most adapters are the U-Net's
        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()
        try:
            with warnings.catch_warnings():  # adapters side by side are the point (lora:A, lora:B)
                warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        finally:
            diffusers_logging.set_verbosity(level)
    return name


def use_adapter(pipe: Any, name: str | None) -> None:
    """Make ``name`` the only active adapter, or switch every adapter off (the base model) for None,
    in the U-Net and the text encoders alike."""
    if not any(getattr(m, "peft_config", None) for m in (pipe.unet, *text_encoders(pipe).values())):
        if name is not None:
            raise ValueError(f"adapter {name!r} is not loaded")
        return
    if name is None:
        pipe.disable_lora()
    else:
        pipe.enable_lora()
        pipe.set_adapters([name])


def read_training_curve(folder: Path | str) -> tuple[list[dict[str, float]], str] | None:
    """The adapter's training reward and KL per update, and where they were read; None if unrecorded.

    Adapters record the curve in their metadata. Those saved before they did are still read from the
    ``history.json`` of the run folder around them, but only when that folder's recipe is the adapter's
    and its last update is the adapter's last (so a history of another run is never shown as this one's).
    """
    metadata = read_adapter_metadata(folder)
    if CURVE_KEY in metadata:
        try:
            return json.loads(metadata[CURVE_KEY]), "the adapter's metadata"
        except ValueError:
            return None
    run = adapter_file(folder).parent.parent
    try:
        recipe = json.loads((run / RUN_RECIPE_FILE).read_text(encoding="utf-8"))
        history = json.loads((run / RUN_HISTORY_FILE).read_text(encoding="utf-8"))
        recorded_recipe = json.loads(metadata.get("recipe", "null"))
        recorded_final = json.loads(metadata.get("final", "null"))
        if not history or recipe != recorded_recipe or history[-1] != recorded_final:
            return None
        points = [
            {"iteration": int(h["iteration"]), "reward": float(h["reward"]), "kl": float(h["kl"])}
            for h in history
        ]
    except (OSError, ValueError, KeyError, TypeError):  # no run folder there, or not one of ours
        return None
    return points, f"{run / RUN_HISTORY_FILE} (the run that saved the adapter)"
