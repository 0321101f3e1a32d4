"""Strength sweep: one entry per weight in sweep.json, a plot, resumable, and its command line."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from diffsteer.attributes import ClipZeroShotClassifier
from diffsteer.cli import app
from diffsteer.experiments.sweep import parse_weights, run_sweep, weight_reaching_share
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.steering.noise import NoiseDirection

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tiny_model_dirs, tmp_path_factory):
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    shape = SteeredGenerator(pipe).latent_shape
    v = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny", "axis": "gender"}
    path = NoiseDirection("woman", v / v.norm(), meta).save(tmp_path_factory.mktemp("dirs"))
    return pipe, path


def test_sweep_writes_json_and_plot_with_one_entry_per_weight(setup, tiny_model_dirs, tmp_path):
    pipe, path = setup
    clip = ClipZeroShotClassifier.from_pretrained(str(tiny_model_dirs["clip"]))
    kw = dict(out_dir=tmp_path, model="tiny", pipe=pipe, n=3, steps=2, classifier=clip, batch_size=3)
    result = run_sweep("a photo of a doctor", [path], [2, 8], **kw)
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["weights"] == [0.0, 2.0, 8.0]  # weight 0 added: the quality reference
    assert data["kind"] == "noise" and data["axis"] == "gender" and data["directions"] == ["woman"]
    for key in ("n", "clip_score", "frechet_distance"):
        assert len(data[key]) == 3
    assert set(data["shares"]) == {"man", "woman"} and all(len(v) == 3 for v in data["shares"].values())
    assert data["frechet_distance"][0] == pytest.approx(0.0, abs=1e-6)
    assert data["frechet_distance"][2] > 0  # steered images differ from the unsteered ones
    png = (tmp_path / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and result.plot_path == tmp_path / "sweep.png"

    # a rerun with one more weight generates only that weight's images
    calls = [0]
    handle = pipe.unet.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        again = run_sweep("a photo of a doctor", [path], [2, 4, 8], **kw)
    finally:
        handle.remove()
    assert again.data["weights"] == [0.0, 2.0, 4.0, 8.0]
    assert calls[0] == 2  # one batch (the 3 new images) x 2 steps; all 4 weights would take 8 calls
    assert again.data["shares"]["woman"][0] == data["shares"]["woman"][0]


def test_weights_parsing_and_recommendation():
    assert parse_weights("4, 1,0,-2") == [-2.0, 0.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="not a number"):
        parse_weights("1,two")
    data = {"weights": [0, 2, 4, 8], "shares": {"woman": [0.0, 0.3, 0.55, 0.9]}, "n": [8, 8, 8, 8]}
    assert weight_reaching_share(data, "woman") == 4.0
    assert weight_reaching_share(data, "woman", share=0.95) is None


def test_sweep_cli(setup, tiny_model_dirs, tmp_path):
    _, path = setup
    base = ["sweep", "--noise-direction", str(path), "--prompt", "a photo of a doctor", "--model",
            str(tiny_model_dirs["sd1"]), "--classifier", str(tiny_model_dirs["clip"]), "--steps", "2",
            "--n", "2", "--out", str(tmp_path / "run")]  # fmt: skip
    bad = runner.invoke(app, [*base, "--weights", "1,x"])
    assert bad.exit_code == 2 and "not a number" in bad.output
    missing = runner.invoke(app, [*base[:2], str(tmp_path / "nope.noise.safetensors"), *base[3:]])
    assert missing.exit_code == 2 and "not found" in missing.output
    ok = runner.invoke(app, [*base, "--weights", "0,4"])
    assert ok.exit_code == 0, ok.output
    assert "w=4:" in ok.output and (tmp_path / "run" / "sweep.png").is_file()
    # another sweep into the same folder is refused in one line naming what sweep offers (no --resume)
    other = runner.invoke(app, [*base, "--weights", "0,4", "--seed", "7"])
    assert other.exit_code == 2 and "--force" in other.output and "--resume" not in other.output
    assert "seed" in other.output
    forced = runner.invoke(app, [*base, "--weights", "0,4", "--seed", "7", "--force"])
    assert forced.exit_code == 0, forced.output
