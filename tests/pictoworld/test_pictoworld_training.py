"""The training recipe end to end at toy sizes: every stage runs and saves a loadable layout."""

from __future__ import annotations

import json

import numpy as np
from transformers import CLIPModel

from diffsteer.pictoworld.oracle import load_oracle, predict
from diffsteer.pictoworld.train import PRESETS, train_pictoworld


def test_smoke_training_saves_standard_layouts(tmp_path):
    from diffusers import StableDiffusionPipeline

    record = train_pictoworld(tmp_path, PRESETS["smoke"], command="pytest smoke")
    saved = json.loads((tmp_path / "training_record.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["command"] == "pytest smoke"
    assert set(record["final"]) >= {"vae_loss", "unet_loss", "clip_loss", "oracle_loss"}
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    image = pipe("a photo of a doctor", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()
    clip = CLIPModel.from_pretrained(tmp_path / "clip")
    assert clip.config.vision_config.image_size == 32
    oracle = load_oracle(tmp_path / "oracle")
    labels = predict(oracle, (image * 255).astype(np.uint8)[None])
    assert labels["gender"][0] in {"man", "woman", "uncertain"}


def test_training_reports_progress_in_a_log_that_is_not_a_terminal(tmp_path):
    """Under nohup or CI rich draws no bar; the command must still say how far each stage has got."""
    from typer.testing import CliRunner

    from diffsteer.cli import app

    result = CliRunner().invoke(app, ["pictoworld", "train", "--preset", "smoke", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for stage in ("vae", "unet", "clip", "oracle"):
        assert f"{stage}: 4/4 (" in result.output and ", loss " in result.output, result.output
    assert "unet: 1/4 (" in result.output  # the start of a stage is shown, not only its end
