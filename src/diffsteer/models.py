"""Find and load the text-to-image models diffsteer audits.

A model reference is, in order of precedence, the name of a bundled model (registered in
:mod:`diffsteer.registry` by the package that ships it), a local diffusers pipeline folder, or a
Hugging Face Hub repo id. Every failure ends in
one line naming everything that was tried, so a typo in a CLI flag is diagnosed without a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from diffsteer import registry

# Classifier-free guidance a model is sampled at unless it registered its own.
STANDARD_GUIDANCE = 7.5

SUPPORTED_PIPELINES: tuple[type[DiffusionPipeline], ...] = (
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
_SUPPORTED_NAMES = {cls.__name__ for cls in SUPPORTED_PIPELINES}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# hub ids found only in the local cache because the hub could not be reached: load them from the cache
_offline_sources: set[str] = set()


class ModelNotFoundError(RuntimeError):
    """A model reference that resolves to nothing loadable; the message names every place tried."""


class UnsupportedModelError(ValueError):
    """A loadable pipeline whose class diffsteer cannot steer (only SD 1.x/2.x and SDXL are supported)."""


class DeviceUnavailableError(RuntimeError):
    """A ``device`` this machine's torch cannot use (no CUDA, no MPS, or an unknown name)."""


def default_guidance(ref: str) -> float:
    """The guidance scale a model is sampled at unless told otherwise: its own, else SD's usual 7.5."""
    entry = registry.bundled_model(ref)
    return entry.guidance if entry is not None and entry.guidance is not None else STANDARD_GUIDANCE


def default_classifier(model: str) -> str:
    """The CLIP a bundled model registered as its own, else the general one."""
    entry = registry.bundled_model(model)
    own = entry.classifier_ref() if entry is not None else None
    if own is not None:
        return own
    from diffsteer.attributes import DEFAULT_CLASSIFIER

    return DEFAULT_CLASSIFIER


def _short(exc: BaseException, limit: int = 160) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(ref: str) -> str:
    return ref if ref.startswith((".", "/", "~")) or os.path.isabs(ref) else f"./{ref}"


def _hub_offline() -> bool:
    """Read the offline switch at call time (huggingface_hub reads it only once, at import)."""
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _is_repo_id(ref: str) -> bool:
    try:
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError:  # pragma: no cover - huggingface_hub is a diffusers dependency
        return ref.count("/") <= 1
    try:
        validate_repo_id(ref)
    except HFValidationError:
        return False
    return True


def check_device(device: str) -> torch.device:
    """The torch device named by ``device``, or DeviceUnavailableError saying what to use instead."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceUnavailableError(f"unknown device {device!r}: {_short(exc)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {device!r} requested but CUDA is not available to torch {torch.__version__} "
                "(CPU-only build or no GPU); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {device!r} requested but this machine has {torch.cuda.device_count()} CUDA "
                "device(s); use --device cuda:0"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            f"device {device!r} requested but Apple MPS is not available; use --device cpu"
        )
    return dev


_check_device = check_device  # the name other modules used before it was public


def check_dtype(dtype: str) -> torch.dtype:
    """The torch dtype named by ``dtype`` (float32, float16 or bfloat16)."""
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers at all: one TCP connection instead of ~25 s of HTTP retries."""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _unsupported(ref: str, class_name: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"model {ref!r} is a {class_name}; diffsteer supports StableDiffusionPipeline (SD 1.x/2.x) "
        "and StableDiffusionXLPipeline (SDXL)"
    )


def _pipeline_folder(ref: str, folder: Path, what: str) -> tuple[Path, dict[str, Any]]:
    """Check that ``folder`` is a diffusers pipeline and return it with its model_index config."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"model {ref!r}: {what} {folder} is not a folder")
    if not (folder / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"model {ref!r}: {what} {folder} exists but is not a diffusers pipeline: missing model_index.json"
        )
    try:
        config = DiffusionPipeline.load_config(folder)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"model {ref!r}: {what} {folder} has an unreadable model_index.json ({_short(exc)})"
        ) from None
    if not config.get("_class_name"):
        raise ModelNotFoundError(
            f"model {ref!r}: {folder}/model_index.json names no pipeline class (no '_class_name'); "
            "is it a diffusers pipeline saved with save_pretrained?"
        )
    _check_safetensors(ref, folder, config)
    return folder, config


def _check_safetensors(ref: str, folder: Path, config: dict[str, Any]) -> None:
    """Refuse, with the fix, a pipeline whose weights exist only as pickles (.bin), which are never loaded."""
    for component, spec in config.items():
        if component.startswith("_") or not isinstance(spec, (list, tuple)) or spec[0] is None:
            continue
        sub = folder / component
        if not sub.is_dir():
            continue
        if any(sub.glob("*.bin")) and not any(sub.glob("*.safetensors")):
            raise ModelNotFoundError(
                f"model {ref!r}: {sub} holds only .bin (pickle) weights and diffsteer loads safetensors "
                "only; convert it once where you trust the file: DiffusionPipeline.from_pretrained(folder)"
                ".save_pretrained(new_folder, safe_serialization=True), then pass --model new_folder"
            )


def _single_file_hint(ref: str, path: Path) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"model {ref!r}: {path} is a single-file checkpoint, and diffsteer loads diffusers pipeline "
        "folders; convert it once: StableDiffusionPipeline.from_single_file(path, config=<a local "
        "pipeline folder of the same architecture>).save_pretrained(new_folder), then pass --model new_folder"
    )


def _resolve(ref: str) -> tuple[str | Path, dict[str, Any]]:
    """Return (folder or hub id, model_index config) or raise ModelNotFoundError naming all that was tried."""
    bundled = registry.bundled_model(ref)
    if bundled is not None:
        try:
            folder = bundled.pipeline_folder()
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelNotFoundError(f"bundled model {ref!r} could not be located: {_short(exc)}") from None
        return _pipeline_folder(ref, folder, "bundled model folder")

    local = Path(ref).expanduser()
    if local.is_file() and local.suffix in (".safetensors", ".ckpt", ".pt", ".bin"):
        raise _single_file_hint(ref, local)
    if local.exists():
        return _pipeline_folder(ref, local, "folder")

    names = ", ".join(sorted(registry.bundled_models())) or "none registered"
    names += "".join(f"; plugin {p} failed: {why}" for p, why in registry.plugin_failures().items())
    tried = f"model {ref!r}: not a bundled model ({names}), no folder at {_shown(ref)}"
    if not _is_repo_id(ref):
        raise ModelNotFoundError(f"{tried}, not a valid hub repo id")
    offline = _hub_offline()
    unreachable = not offline and not _hub_reachable()
    try:
        with warnings.catch_warnings():  # diffusers passes a hub argument that huggingface_hub deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            config = DiffusionPipeline.load_config(ref, local_files_only=offline or unreachable)
    except Exception as exc:  # any failure to fetch one small JSON file means "not found"
        if offline:
            where = "hub offline (HF_HUB_OFFLINE) and not in the local cache"
        elif unreachable:
            where = "hub unreachable (no network?) and not in the local cache"
        else:
            where = f"the hub has no such repo or refused it ({_short(exc)})"
        raise ModelNotFoundError(f"{tried}; {where}; pass a local pipeline folder") from None
    if not config.get("_class_name"):
        raise ModelNotFoundError(f"model {ref!r}: its model_index.json names no pipeline class (_class_name)")
    if unreachable:
        _offline_sources.add(ref)
    return ref, config


def check_model(ref: str) -> str:
    """Resolve ``ref`` and check, without loading any weights, that diffsteer can load and steer it.

    Returns the pipeline class name; raises ModelNotFoundError or UnsupportedModelError in one line.
    """
    _, config = _resolve(ref)
    class_name = str(config.get("_class_name"))
    if class_name not in _SUPPORTED_NAMES:
        raise _unsupported(ref, class_name)
    return class_name


def _dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype``; use whichever this version accepts without warning."""
    try:
        from diffusers.utils import deprecation_utils
    except ImportError:  # pragma: no cover
        return "torch_dtype"
    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


def load_pipeline(
    ref: str | None = None, *, device: str = "cpu", dtype: str = "float32"
) -> DiffusionPipeline:
    """Load a bundled model, a local pipeline folder or a hub repo as a ready-to-steer pipeline.

    Weights are read only from safetensors (never pickles). The Stable Diffusion safety checker is
    removed: it silently replaces flagged images with black squares, which would bias an audit;
    diffsteer measures unsafe output itself and reports it instead. ``ref=None``: the default
    bundled model (:func:`diffsteer.registry.default_model`).
    """
    check_dtype(dtype)
    dev = check_device(device)
    source, config = _resolve(ref)
    class_name = config.get("_class_name")
    if class_name not in _SUPPORTED_NAMES:  # checked before loading: weights may be many gigabytes
        raise _unsupported(ref, str(class_name))

    kwargs: dict[str, Any] = {"use_safetensors": True, _dtype_kwarg(): _DTYPES[dtype]}
    if class_name == StableDiffusionPipeline.__name__:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if isinstance(source, str):
        kwargs["local_files_only"] = _hub_offline() or source in _offline_sources
    try:
        pipe = _from_pretrained(source, kwargs, half=dtype == "float16")
    except (OSError, ValueError, KeyError) as exc:
        shown = source if isinstance(source, str) else _shown(str(source))
        raise ModelNotFoundError(
            f"model {ref!r}: found a {class_name} at {shown} but could not load it: {_short(exc)}"
        ) from None
    if not isinstance(pipe, SUPPORTED_PIPELINES):
        raise _unsupported(ref, type(pipe).__name__)
    pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_pretrained(source: str | Path, kwargs: dict[str, Any], half: bool) -> DiffusionPipeline:
    """Load the pipeline; in half precision from the hub, its fp16 variant first (half the download)."""
    if half and isinstance(source, str):
        try:
            return DiffusionPipeline.from_pretrained(source, variant="fp16", **kwargs)
        except (OSError, ValueError):
            pass  # the repo has no fp16 variant: load the full-precision files and cast them
    return DiffusionPipeline.from_pretrained(source, **kwargs)


def model_fingerprint(pipe: DiffusionPipeline) -> str:
    """Hash of the U-Net architecture, so steering directions are never applied to a different network."""
    config = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def weights_fingerprint(pipe: DiffusionPipeline) -> str:
    """Hash of the weights themselves (a sample of every tensor), so that a run store never mistakes
    images of a retrained or fine-tuned model for those of another model of the same architecture.

    ``model_fingerprint`` says whether a steering file fits the network; this says whether an image
    made earlier would come out the same. A few values per tensor suffice: training moves them all.
    """
    digest = hashlib.sha256()
    for part in ("unet", "text_encoder", "text_encoder_2", "vae"):
        module = getattr(pipe, part, None)
        if module is None:
            continue
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().flatten()
            # indices computed on the CPU, so the hash does not depend on the device the model is on
            idx = torch.linspace(0, flat.numel() - 1, steps=min(64, flat.numel())).long().to(flat.device)
            digest.update(f"{part}.{name}:{tuple(tensor.shape)}".encode())
            digest.update(flat[idx].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _sample_hw(pipe: DiffusionPipeline) -> tuple[int, int]:
    size = pipe.unet.config.sample_size
    if isinstance(size, int):
        return size, size
    return int(size[0]), int(size[1])


def describe_model(pipe: DiffusionPipeline, ref: str) -> dict[str, Any]:
    """A JSON-ready summary of what was loaded, for run manifests and reports."""
    h, w = _sample_hw(pipe)
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    return {
        "ref": ref,
        "pipeline": type(pipe).__name__,
        "prediction_type": pipe.scheduler.config.get("prediction_type", "epsilon"),
        "fingerprint": model_fingerprint(pipe),
        "weights": weights_fingerprint(pipe),
        "latent_shape": [int(pipe.unet.config.in_channels), h, w],
        "sample_size": [h, w],
        "image_size": [h * scale, w * scale],
    }
