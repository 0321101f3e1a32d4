"""The training recipe end to end at toy sizes: every stage runs and saves a loadable layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import CLIPModel

from diffsteer.pictoworld.oracle import load_oracle, predict
from diffsteer.pictoworld.train import PRESETS, train_pictoworld, training_timesteps


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


def test_unet_steps_n_images_and_widths_override_the_presets_and_are_recorded(tmp_path):
    """A recipe experiment (--unet-steps, --n-images, --unet-channels) trains that many U-Net steps of
    that width on that many pairs and says so in the record, so a candidate's folder tells which recipe
    made it."""
    import json

    from typer.testing import CliRunner

    from diffsteer.cli import app

    args = ["pictoworld", "train", "--preset", "smoke", "--unet-steps", "2", "--n-images", "300"]
    args += ["--unet-channels", "32,48", "--out", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "unet: 2/2 (" in result.output and "unet: 4/4" not in result.output
    record = json.loads((tmp_path / "training_record.json").read_text())
    assert record["config"]["unet_steps"] == 2
    assert record["config"]["n_images"] == 300  # the smoke preset's is 512
    assert record["config"]["unet_channels"] == [32, 48]  # the smoke preset's is 16,32
    unet = json.loads((tmp_path / "pipeline" / "unet" / "config.json").read_text())
    assert unet["block_out_channels"] == [32, 48]


def test_data_seed_draws_the_pictures_apart_from_the_training_seed(tmp_path):
    """--data-seed keeps the training pairs of another seed while --seed sets the rest: the record's data
    digest says which draw a candidate saw, and the training's own randomness still follows --seed."""
    import json

    from typer.testing import CliRunner

    from diffsteer.cli import app

    def train(name: str, *extra: str) -> dict:
        args = ["pictoworld", "train", "--preset", "smoke", "--unet-steps", "1", "--n-images", "64"]
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return json.loads((tmp_path / name / "training_record.json").read_text())

    seed0, seed1 = train("s0", "--seed", "0"), train("s1", "--seed", "1")
    mixed = train("mixed", "--seed", "1", "--data-seed", "0")
    assert mixed["data_digest"] == seed0["data_digest"] != seed1["data_digest"]
    assert mixed["config"]["data_seed"] == 0 and seed0["config"]["data_seed"] is None
    # same pictures as seed 0, but seed 1's VAE initialisation and batches: another VAE than seed 0's
    assert mixed["final"]["vae_loss"] != seed0["final"]["vae_loss"]


@pytest.mark.parametrize("option", ["--seed", "--data-seed"])
def test_a_negative_training_seed_is_refused_before_any_training(tmp_path, option):
    from typer.testing import CliRunner

    from diffsteer.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["pictoworld", "train", "--preset", "smoke", option, "-1", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    "extra",
    [["64,abc"], ["64"], ["64,100"], ["0,64"], ["64,128", "--init-from", "WEIGHTS"]],
)
def test_bad_unet_widths_fail_in_one_line_before_any_training(tmp_path, extra):
    """Unusable widths, or widths beside a warm start (which keeps its folder's U-Net), are refused."""
    from typer.testing import CliRunner

    from diffsteer.cli import app
    from diffsteer.pictoworld import weights_dir

    out = tmp_path / "run"
    extra = [str(weights_dir()) if e == "WEIGHTS" else e for e in extra]
    args = ["pictoworld", "train", "--preset", "smoke", "--unet-channels", *extra, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "--unet-channels" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_a_warm_started_training_keeps_the_words_it_knew_and_learns_new_ones(tmp_path):
    """--init-from: the text encoder of a model trained on an older vocabulary keeps each known word's
    embedding (same ids or not) and gives new words a row; the whole recipe then runs from it."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    from diffsteer.pictoworld.train import _text_config, grow_text_encoder
    from diffsteer.tokenizer import build_word_tokenizer

    old = build_word_tokenizer(["a photo of a soldier with a weapon"], hyphenated_words=True)
    new = build_word_tokenizer(["a photo of a doctor with drugs and a weapon"], hyphenated_words=True)
    encoder = CLIPTextModel(_text_config(old, 16, 1)).eval()
    grown = grow_text_encoder(encoder, old, new).eval()
    assert grown.config.vocab_size == len(new) > len(old)
    rows_old = encoder.get_input_embeddings().weight
    rows_new = grown.get_input_embeddings().weight
    for word in ("photo", "weapon", "with"):
        assert torch.equal(rows_new[new.get_vocab()[word]], rows_old[old.get_vocab()[word]])
    text = "a photo with a weapon"
    with torch.no_grad():
        before = encoder(old(text, return_tensors="pt").input_ids).last_hidden_state
        after = grown(new(text, return_tensors="pt").input_ids).last_hidden_state
    assert torch.allclose(before, after, atol=1e-5)

    first = tmp_path / "first"
    train_pictoworld(first, PRESETS["smoke"])
    record = train_pictoworld(tmp_path / "warm", PRESETS["smoke"], init_from=first)
    assert record["init_from"] == str(first)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "warm" / "pipeline")
    image = pipe("a photo of a doctor with drugs", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()


def test_high_noise_share_draws_that_share_of_timesteps_from_the_noisier_half_and_nothing_more_at_zero():
    def draw(share, seed=0):
        gen = torch.Generator().manual_seed(seed)
        t = training_timesteps(20_000, 1000, share, gen)
        return t, torch.rand(1, generator=gen)  # what the generator gives next

    uniform, after_uniform = draw(0.0)
    plain = torch.Generator().manual_seed(0)
    assert torch.equal(uniform, torch.randint(0, 1000, (20_000,), generator=plain))
    assert torch.equal(after_uniform, torch.rand(1, generator=plain))  # the bundled recipe, bit for bit
    for share in (0.5, 1.0):
        t, _ = draw(share)
        assert 0 <= int(t.min()) and int(t.max()) < 1000
        # uniform half + share: P(t >= 500) = 0.5 + share / 2
        assert float((t >= 500).float().mean()) == pytest.approx(0.5 + share / 2, abs=0.015)


def test_a_reused_vae_changes_nothing_but_the_vae(tmp_path):
    """--vae-from: the run keeps that folder's VAE as it is, and everything else (the U-Net's start, its
    batches and noise) is what the same seed gives with a VAE of its own, so two such runs isolate the VAE."""
    import json
    from pathlib import Path

    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from diffsteer.cli import app

    def train(name: str, *extra: str) -> Path:
        args = ["pictoworld", "train", "--preset", "smoke", "--unet-steps", "1", "--n-images", "64"]
        result = CliRunner().invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        return tmp_path / name

    def vae_weights(run: Path) -> dict:
        return load_file(run / "pipeline" / "vae" / "diffusion_pytorch_model.safetensors")

    def unet_weights(run: Path) -> list:
        return list(UNet2DConditionModel.from_pretrained(run / "pipeline" / "unet").parameters())

    own0, own1 = train("s0", "--seed", "0"), train("s1", "--seed", "1")
    reused = train("s0-vae1", "--seed", "0", "--vae-from", str(own1))
    record = json.loads((reused / "training_record.json").read_text())
    assert record["vae_from"] == str(own1) and "vae_loss" not in record["final"]
    assert all(torch.equal(w, vae_weights(own1)[k]) for k, w in vae_weights(reused).items())
    assert not all(torch.equal(w, vae_weights(own0)[k]) for k, w in vae_weights(reused).items())
    # one U-Net step from the same start on other latents: seed 0's U-Net, not seed 1's
    unet = unet_weights(reused)
    assert all(torch.allclose(a, b, atol=1e-3) for a, b in zip(unet, unet_weights(own0), strict=True))
    assert not all(torch.allclose(a, c, atol=1e-3) for a, c in zip(unet, unet_weights(own1), strict=True))


@pytest.mark.parametrize(
    "extra", [["--vae-from", "MISSING"], ["--vae-from", "WEIGHTS", "--init-from", "WEIGHTS"]]
)
def test_an_unusable_vae_source_fails_in_one_line_before_any_training(tmp_path, extra):
    from typer.testing import CliRunner

    from diffsteer.cli import app
    from diffsteer.pictoworld import weights_dir

    out = tmp_path / "run"
    extra = [{"WEIGHTS": str(weights_dir()), "MISSING": str(tmp_path / "nowhere")}.get(e, e) for e in extra]
    result = CliRunner().invoke(app, ["pictoworld", "train", "--preset", "smoke", *extra, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "--vae-from" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--device", "nonsense"),
        ("--device", "cuda:99"),
        ("--contrast-rate", "0.5"),
        ("--contrast-rate", "-0.01"),
        ("--unet-lr", "0"),
        ("--unet-lr", "-0.001"),
    ],
)
def test_a_bad_device_contrast_rate_or_learning_rate_fails_in_one_line_before_training(tmp_path, flag, value):
    from typer.testing import CliRunner

    from diffsteer.cli import app

    out = tmp_path / "run"
    args = ["pictoworld", "train", "--preset", "smoke", flag, value, "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert value in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_a_gpu_training_draws_the_batches_and_noise_of_a_cpu_training(tmp_path):
    """--device cuda: every random draw stays on the CPU, so the weights differ from a CPU run of the same
    seed by rounding alone (run by tools/device_train_seeds.sh's self-check on a GPU machine)."""
    import json

    import torch
    from diffusers import UNet2DConditionModel
    from typer.testing import CliRunner

    from diffsteer.cli import app

    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        args = ["pictoworld", "train", "--preset", "smoke", "--unet-steps", "2", "--n-images", "64"]
        result = CliRunner().invoke(app, [*args, "--device", device, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert json.loads((out / "training_record.json").read_text())["device"].startswith(device)
        runs[device] = list(UNet2DConditionModel.from_pretrained(out / "pipeline" / "unet").parameters())
    assert all(torch.allclose(a, b, atol=2e-3) for a, b in zip(runs["cpu"], runs["cuda"], strict=True))


def test_a_finetune_keeps_the_vae_and_judges_and_goes_on_from_the_unet(tmp_path):
    """--finetune-from: the VAE (its latent scaling too), CLIP and oracle are the folder's files, byte for
    byte; the U-Net starts from the folder's and moves, and the record names its widths, not the preset's;
    bad combinations fail in one line first."""
    import json

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from diffsteer.cli import app

    runner = CliRunner()
    base = ["pictoworld", "train", "--preset", "smoke", "--unet-steps", "2", "--n-images", "64"]
    first = tmp_path / "first"
    assert runner.invoke(app, [*base, "--unet-channels", "32,64", "--out", str(first)]).exit_code == 0
    tuned = tmp_path / "tuned"
    result = runner.invoke(
        app, [*base, "--finetune-from", str(first), "--unet-lr", "1e-4", "--out", str(tuned)]
    )
    assert result.exit_code == 0, result.output
    for part in ("pipeline/vae/diffusion_pytorch_model.safetensors", "clip/model.safetensors",
                 "oracle/model.safetensors"):  # fmt: skip
        assert (first / part).read_bytes() == (tuned / part).read_bytes(), part
    vae_configs = [json.loads((r / "pipeline/vae/config.json").read_text()) for r in (first, tuned)]
    assert vae_configs[0]["scaling_factor"] == vae_configs[1]["scaling_factor"]
    record = json.loads((tuned / "training_record.json").read_text())
    assert record["finetune_from"] == str(first) and record["config"]["unet_lr"] == 1e-4
    unet_config = json.loads((tuned / "pipeline/unet/config.json").read_text())
    assert record["config"]["unet_channels"] == unet_config["block_out_channels"] == [32, 64]
    before = load_file(first / "pipeline/unet/diffusion_pytorch_model.safetensors")
    after = load_file(tuned / "pipeline/unet/diffusion_pytorch_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    for extra in (["--finetune-from", str(tmp_path / "nowhere")],
                  ["--finetune-from", str(first), "--vae-from", str(first)]):  # fmt: skip
        out = tmp_path / "refused"
        refused = runner.invoke(app, [*base, *extra, "--out", str(out)])
        assert refused.exit_code == 2 and "--finetune-from" in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1 and not out.exists()


def _prediction_gap(model, teacher, tokenizer, captions, seed=0):
    """Mean squared gap between two (unet, text_encoder) pairs' noise predictions on fixed inputs."""
    from diffsteer.pictoworld.train import _tokenize

    gen = torch.Generator().manual_seed(seed)
    zt = torch.randn(len(captions), 4, 8, 8, generator=gen)
    t = torch.randint(1000, (len(captions),), generator=gen)
    ids = _tokenize(tokenizer, captions)
    with torch.no_grad():
        a, b = (
            unet(zt, t, encoder_hidden_states=text(ids).last_hidden_state).sample
            for unet, text in (model, teacher)
        )
    return float(((a - b) ** 2).mean())


def test_a_finetune_that_relearns_one_profession_keeps_the_others_at_the_starting_model():
    """relearn_professions: pictures of other professions train toward the starting model's prediction,
    so on a batch without the relearned profession the model stays where it started, while a plain
    fine-tune on the same pictures moves away from it."""
    import copy
    from dataclasses import replace

    from transformers import CLIPTextModel

    from diffsteer.pictoworld import world
    from diffsteer.pictoworld.train import _make_unet, _text_config, build_tokenizer, train_unet

    cfg = replace(PRESETS["smoke"], unet_steps=40, unet_lr=2e-2, caption_dropout=0.0)
    tokenizer = build_tokenizer()
    pairs = [p for p in world.training_pairs(np.random.default_rng(0), 96) if p[0].profession != "chef"]
    gen = torch.Generator().manual_seed(1)
    mean, std = torch.randn(len(pairs), 4, 8, 8, generator=gen), torch.full((len(pairs), 4, 8, 8), 0.1)
    torch.manual_seed(0)
    start = (_make_unet(cfg), CLIPTextModel(_text_config(tokenizer, cfg.text_hidden, cfg.text_layers)))
    gaps = {}
    for name, relearn in (("plain", ()), ("relearn chef", ("chef",))):
        run = replace(cfg, relearn_professions=relearn)
        tuned = train_unet(run, tokenizer, pairs, mean, std, 1.0, lambda *a: None, copy.deepcopy(start))
        unet, text = tuned[:2]
        gaps[name] = _prediction_gap((unet, text), start, tokenizer, [c.text for _, c in pairs[:32]])
    assert gaps["relearn chef"] < 0.1 * gaps["plain"], gaps


@pytest.mark.parametrize(
    "extra, named",
    [(["--relearn", "chef"], "--relearn"),  # no --finetune-from: nothing to keep the others at
     (["--relearn", "astronaut", "--finetune-from", "."], "astronaut")],
)  # fmt: skip
def test_a_relearn_without_a_finetune_or_of_no_profession_fails_in_one_line(tmp_path, extra, named):
    from typer.testing import CliRunner

    from diffsteer.cli import app

    out = tmp_path / "refused"
    base = ["pictoworld", "train", "--preset", "smoke", "--out", str(out)]
    refused = CliRunner().invoke(app, [*base, *extra])
    assert refused.exit_code == 2 and named in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not out.exists()
