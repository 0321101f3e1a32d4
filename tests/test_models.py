"""Model resolution and loading: bundled names, local folders, hub ids and one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

from diffsteer import registry
from diffsteer.models import (
    ModelNotFoundError,
    UnsupportedModelError,
    describe_model,
    load_pipeline,
    model_fingerprint,
)
from diffsteer.registry import default_model, register_model
from diffsteer.testing import tiny_sd_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    folders = {}
    for kind in ("sd1", "sd2", "sdxl"):
        tiny_sd_pipeline(kind).save_pretrained(root / kind)
        folders[kind] = root / kind
    return folders


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("kind", "cls", "prediction"),
    [
        ("sd1", StableDiffusionPipeline, "epsilon"),
        ("sd2", StableDiffusionPipeline, "v_prediction"),
        ("sdxl", StableDiffusionXLPipeline, "epsilon"),
    ],
)
def test_loads_each_kind_from_a_saved_folder(
    saved: dict[str, Path], kind: str, cls: type, prediction: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = load_pipeline(str(saved[kind]))
    assert type(pipe) is cls
    assert pipe.unet.dtype == torch.float32 and pipe.unet.device.type == "cpu"
    assert pipe.scheduler.config.prediction_type == prediction
    assert getattr(pipe, "safety_checker", None) is None
    capsys.readouterr()
    images = pipe(prompt="a photo of a doctor", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3)
    assert "it/s" not in capsys.readouterr().err  # no progress bar in audit logs
    assert model_fingerprint(pipe) == model_fingerprint(tiny_sd_pipeline(kind))
    info = describe_model(pipe, str(saved[kind]))
    assert info["pipeline"] == cls.__name__ and info["prediction_type"] == prediction
    assert info["latent_shape"] == [4, 16, 16] and info["sample_size"] == [16, 16]
    assert info["fingerprint"] == model_fingerprint(pipe) and len(info["fingerprint"]) == 16
    json.dumps(info)


def test_half_precision_dtypes(saved: dict[str, Path]) -> None:
    assert load_pipeline(str(saved["sd1"]), dtype="bfloat16").unet.dtype == torch.bfloat16
    with pytest.raises(
        ValueError, match="unsupported dtype 'float64'; choose one of float32, float16, bfloat16"
    ):
        load_pipeline(str(saved["sd1"]), dtype="float64")


def test_fingerprint_tracks_architecture_not_weights() -> None:
    a, b = tiny_sd_pipeline("sd1", seed=0), tiny_sd_pipeline("sd1", seed=1)
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert model_fingerprint(a) == model_fingerprint(b)
    others = {model_fingerprint(tiny_sd_pipeline(k)) for k in ("sd2", "sdxl")}
    assert model_fingerprint(a) not in others and len(others) == 2


def test_missing_folder_names_everything_tried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline(str(tmp_path / "nope" / "model"))
    text = one_line(info)
    assert "not a bundled model" in text and f"no folder at {tmp_path}/nope/model" in text


def test_folder_without_model_index(tmp_path: Path) -> None:
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline(str(tmp_path))
    assert one_line(info).endswith("exists but is not a diffusers pipeline: missing model_index.json")


def test_folder_with_broken_model_index(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="unreadable model_index.json") as info:
        load_pipeline(str(tmp_path))
    one_line(info)


def test_unknown_hub_id_offline_is_instant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        load_pipeline("diffsteer-nobody/no-such-model")
    assert time.perf_counter() - start < 5
    text = one_line(info)
    assert text.startswith("model 'diffsteer-nobody/no-such-model': not a bundled model")
    assert "no folder at ./diffsteer-nobody/no-such-model" in text and "hub offline" in text


def test_unsupported_pipeline_class_is_named(tmp_path: Path) -> None:
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(UnsupportedModelError, match="is a FluxPipeline; diffsteer supports") as info:
        load_pipeline(str(tmp_path))
    one_line(info)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(saved: dict[str, Path]) -> None:
    with pytest.raises(RuntimeError, match="device 'cuda' requested but CUDA is not available") as info:
        load_pipeline(str(saved["sd1"]), device="cuda")
    one_line(info)


def test_bundled_models_resolve_by_name(saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY", registry.Registry())  # the installed plugins, nothing else
    register_model("tiny-sd2", lambda: saved["sd2"])
    assert registry.bundled_model("tiny-sd2").pipeline_folder() == saved["sd2"]
    pipe = load_pipeline("tiny-sd2")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    register_model("broken", lambda: saved["sd2"] / "unet")
    with pytest.raises(ModelNotFoundError, match="bundled model folder .* missing model_index.json"):
        load_pipeline("broken")
    assert default_model() == "pictoworld"
