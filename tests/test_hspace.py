"""h-space concept vectors: file format, model checks, learning on tiny SD1/SD2/SDXL, resume, CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from diffsteer.cli import app
from diffsteer.experiments.learn import learn_hspace
from diffsteer.generate import SteeredGenerator
from diffsteer.models import model_fingerprint
from diffsteer.steering.files import SteeringFileError, SteeringMismatchError, save_steering_file
from diffsteer.steering.hspace import HSpaceVector, load_hspace
from diffsteer.testing import tiny_pipeline_without_mid_block, tiny_sd_pipeline

TINY = {"images": 4, "steps": 12, "inference_steps": 2, "batch_size": 4}


@pytest.fixture(scope="module")
def pipes() -> dict[str, Any]:
    built = {kind: tiny_sd_pipeline(kind) for kind in ("sd1", "sd2", "sdxl")}
    for pipe in built.values():
        pipe.set_progress_bar_config(disable=True)
    return built


def learn(pipe: Any, work_dir: Path, **overrides: Any) -> HSpaceVector:
    kwargs: dict[str, Any] = {
        "concept": "woman",
        "concept_prompt": "a photo of a woman",
        "neutral_prompt": "a photo of a person",
        "work_dir": work_dir,
        "base_model": "tiny",
        **TINY,
    }
    kwargs.update(overrides)
    return learn_hspace(pipe, **kwargs)


def made_for(pipe: Any, **extra: Any) -> HSpaceVector:
    gen = SteeredGenerator(pipe, steps=2)
    meta = {
        "base_model": "tiny",
        "fingerprint": model_fingerprint(pipe),
        "block": gen.steered_block,
        "shape": list(gen.hspace_shape),
        "recipe": {"concept_prompt": "a photo of a woman", "images": 4},
        "loss_curve": [0.5, 0.25],
        **extra,
    }
    return HSpaceVector("woman", torch.randn(gen.hspace_shape), meta)


# ------------------------------------------------------------------------------------ file format


def test_save_and_load_round_trip_keeps_tensor_and_metadata(pipes, tmp_path):
    vector = made_for(pipes["sd1"], axis="gender", class_name="woman", seconds=1.5)
    path = vector.save(tmp_path)
    assert path == tmp_path / "woman.hspace.safetensors"
    back = load_hspace(path)
    assert back.concept == "woman"
    assert torch.equal(back.vector, vector.vector) and back.vector.dtype == torch.float32
    assert back.metadata == vector.metadata
    assert (back.axis, back.class_name, back.block) == ("gender", "woman", "mid_block")
    assert torch.allclose(back.scaled(-2.0), -2.0 * vector.vector)
    explicit = vector.save(tmp_path / "sub" / "other-name.hspace.safetensors")
    assert torch.equal(load_hspace(explicit).vector, vector.vector)


def test_unreadable_or_foreign_files_are_refused_in_one_line(pipes, tmp_path):
    garbage = tmp_path / "garbage.hspace.safetensors"
    garbage.write_bytes(b"\x00not a safetensors file at all" * 10)
    plain = tmp_path / "plain.hspace.safetensors"
    save_file({"vector": torch.zeros(2, 2, 2)}, str(plain))  # safetensors, but no diffsteer metadata
    noise = save_steering_file(
        tmp_path / "woman.noise.safetensors", {"direction": torch.zeros(4, 2, 2)}, {"diffsteer_kind": "noise"}
    )
    for path, words in (
        (garbage, "not a readable safetensors"),
        (plain, "not a diffsteer steering file"),
        (noise, "not an h-space vector"),
        (tmp_path / "missing.hspace.safetensors", "not found"),
    ):
        with pytest.raises(SteeringFileError, match=words) as info:
            load_hspace(path)
        assert "\n" not in str(info.value)


def test_vector_for_another_model_or_shape_is_refused(pipes):
    vector = made_for(pipes["sd1"])
    vector.check_compatible(SteeredGenerator(pipes["sd1"], steps=2))  # its own model: accepted
    with pytest.raises(SteeringMismatchError, match="fingerprint") as info:
        vector.check_compatible(SteeredGenerator(pipes["sdxl"], steps=2))
    assert "\n" not in str(info.value)
    # same U-Net, larger images: the bottleneck is larger than the vector
    with pytest.raises(SteeringMismatchError, match=r"shape \(32, 8, 8\).*\(32, 16, 16\)"):
        vector.check_compatible(SteeredGenerator(pipes["sd1"], steps=2, height=64, width=64))
    moved = made_for(pipes["sd1"], block="down_blocks.1")
    with pytest.raises(SteeringMismatchError, match="steers down_blocks.1"):
        moved.check_compatible(SteeredGenerator(pipes["sd1"], steps=2))


# --------------------------------------------------------------------------------------- learning


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_learning_lowers_the_denoising_loss(pipes, tmp_path, kind):
    pipe = pipes[kind]
    stages: list[tuple[str, int, int]] = []
    vector = learn(pipe, tmp_path, progress=lambda *a: stages.append(a))
    gen = SteeredGenerator(pipe, steps=2)
    assert tuple(vector.vector.shape) == gen.hspace_shape
    assert vector.vector.abs().sum() > 0
    vector.check_compatible(gen)  # learned for this model: its own checks pass
    meta = vector.metadata
    assert meta["prediction_type"] == ("v_prediction" if kind == "sd2" else "epsilon")
    assert meta["block"] == "mid_block" and meta["shape"] == list(gen.hspace_shape)
    assert meta["recipe"]["neutral_prompt"] == "a photo of a person" and meta["recipe"]["images"] == 4
    # the same fixed (image, t, noise) draw scores better with the learned vector than without it
    assert meta["eval_loss"]["with_vector"] < meta["eval_loss"]["without_vector"]
    assert len(meta["loss_curve"]) == 1  # 12 steps: one 50-step window
    assert ("images", 4, 4) in stages and stages[-1] == ("learn", TINY["steps"], TINY["steps"])
    # every weight is left as it was found (frozen while learning only)
    assert all(p.requires_grad for p in pipe.unet.parameters())


def test_second_learn_reuses_the_stored_images(pipes, tmp_path, monkeypatch):
    pipe = pipes["sd1"]
    first = learn(pipe, tmp_path)
    calls: list[int] = []
    real = SteeredGenerator.generate

    def counting(self, requests, **kwargs):
        calls.append(len(requests))
        return real(self, requests, **kwargs)

    monkeypatch.setattr(SteeredGenerator, "generate", counting)
    again = learn(pipe, tmp_path)
    assert calls == []  # nothing generated again
    assert torch.equal(again.vector, first.vector)  # deterministic from the seed
    more = learn(pipe, tmp_path, images=6)
    assert calls == [2]  # only the two new images
    assert not torch.equal(more.vector, first.vector)


def test_unet_without_mid_block_learns_on_the_deepest_down_block(pipes, tmp_path):
    pipe = tiny_pipeline_without_mid_block(pipes["sd1"])
    vector = learn(pipe, tmp_path)
    assert vector.metadata["block"] == "down_blocks.1"
    assert vector.metadata["eval_loss"]["with_vector"] < vector.metadata["eval_loss"]["without_vector"]
    back = load_hspace(vector.save(tmp_path / "out"))
    assert back.block == "down_blocks.1"
    back.check_compatible(SteeredGenerator(pipe, steps=2))
    with pytest.raises(SteeringMismatchError, match="bottleneck is mid_block"):
        back.check_compatible(SteeredGenerator(pipes["sd1"], steps=2), model_fingerprint(pipe))


def test_bad_recipe_is_refused_before_any_work(pipes, tmp_path):
    for overrides, words in (
        ({"concept_prompt": "  "}, "concept prompt is empty"),
        ({"neutral_prompt": ""}, "neutral prompt is empty"),
        ({"images": 0}, "images must be >= 1"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"concept": "../x"}, "invalid steering name"),
    ):
        with pytest.raises(ValueError, match=words):
            learn(pipes["sd1"], tmp_path / "w", **overrides)
    assert not (tmp_path / "w").exists()


# -------------------------------------------------------------------------------------------- CLI

runner = CliRunner()


def cli_args(model: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "learn", "hspace", "--model", str(model), "--concept", "woman",
        "--concept-prompt", "a photo of a woman", "--neutral-prompt", "a photo of a person",
        "--images", "2", "--steps", "3", "--inference-steps", "2", "--batch-size", "2",
        "--out", str(out), "--work-dir", str(out / "work"), *extra,
    ]  # fmt: skip


def test_cli_learns_and_writes_the_file(tiny_model_dirs, tmp_path):
    out = tmp_path / "directions"
    result = runner.invoke(app, cli_args(tiny_model_dirs["sd1"], out, "--axis", "gender", "--class", "woman"))
    assert result.exit_code == 0, result.output
    path = out / "woman.hspace.safetensors"
    assert str(path) in result.stdout and "loss" in result.stdout
    vector = load_hspace(path)
    assert (vector.axis, vector.class_name) == ("gender", "woman")
    assert vector.metadata["base_model"] == str(tiny_model_dirs["sd1"])


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("sd1", ("--concept-prompt", ""), "concept prompt is empty"),
        ("sd1", ("--class", "woman"), "--class needs --axis"),
        ("no-such-model-dir", (), "model 'no-such-model-dir': not a bundled model"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_model_dirs, tmp_path, monkeypatch, model, extra, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref = tiny_model_dirs.get(model, model)
    result = runner.invoke(app, cli_args(ref, tmp_path / "d", *extra))
    assert result.exit_code == 2, result.output
    # one message (the console may wrap it at the terminal width), no traceback
    assert result.output.startswith("error:") and result.output.count("error:") == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "d" / "woman.hspace.safetensors").exists()
