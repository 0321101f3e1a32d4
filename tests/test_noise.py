"""Initial-noise latent directions and text-embedding offsets: learning, files, the weight rule, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffsteer.cli import app
from diffsteer.experiments.learn import learn_noise_directions
from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.steering.files import SteeringFileError, SteeringMismatchError, save_steering_file
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.noise import (
    NoiseDirection,
    choose_step,
    fit_direction,
    load_noise_direction,
    norm_fraction,
    parse_class_specs,
    split_by_seed,
)
from diffsteer.steering.preset import SteeringItem, SteeringSpec
from diffsteer.steering.steerer import Steerer
from diffsteer.steering.text_embedding import TextOffset, learn_text_offset, load_text_offset

runner = CliRunner()
TWO = {"woman": "a photo of a woman", "man": "a photo of a man"}


@pytest.fixture(scope="module")
def sd1(tiny_model_dirs):
    return load_pipeline(str(tiny_model_dirs["sd1"]))


@pytest.fixture(scope="module")
def sdxl(tiny_model_dirs):
    return load_pipeline(str(tiny_model_dirs["sdxl"]))


def _count_unet_calls(pipe) -> list[int]:
    calls = [0]

    def hook(*_args):
        calls[0] += 1

    pipe.unet.register_forward_hook(hook)
    return calls


def _direction(shape=(4, 16, 16), seed=0, **meta) -> NoiseDirection:
    v = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return NoiseDirection("woman", v / v.norm(), {"recommended_weight": 3.0, **meta})


# ------------------------------------------------------------------------------------------ files
def test_file_round_trip_keeps_direction_steps_and_metadata(tmp_path):
    d = _direction(fingerprint="abc", base_model="m", heldout_accuracy={"0": 0.75, "5": 1.0}, step=5)
    d.directions = torch.stack([d.direction, -d.direction])
    path = d.save(tmp_path)
    assert path.name == "woman.noise.safetensors"
    back = load_noise_direction(path)
    assert back.concept == "woman"
    assert torch.equal(back.direction, d.direction)
    assert back.directions is not None and back.directions.shape == (2, 4, 16, 16)
    assert back.metadata["heldout_accuracy"] == {"0": 0.75, "5": 1.0}
    assert back.metadata["step"] == 5 and back.recommended_weight == 3.0
    assert back.metadata["latent_shape"] == [4, 16, 16]


def test_garbage_and_other_kinds_are_refused(tmp_path):
    junk = tmp_path / "x.noise.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SteeringFileError):
        load_noise_direction(junk)
    text_file = tmp_path / "woman.text.safetensors"
    save_steering_file(text_file, {"offset": torch.zeros(3)}, {"diffsteer_kind": "text"})
    with pytest.raises(SteeringFileError, match="not a noise direction"):
        load_noise_direction(text_file)
    with pytest.raises(SteeringFileError):
        load_noise_direction(tmp_path / "missing.noise.safetensors")
    not_unit = tmp_path / "big.noise.safetensors"
    save_steering_file(not_unit, {"direction": torch.ones(4, 2, 2)}, {"diffsteer_kind": "noise"})
    with pytest.raises(SteeringFileError, match="unit norm"):
        load_noise_direction(not_unit)


def test_direction_for_another_model_or_size_is_refused(sd1):
    gen = SteeredGenerator(sd1, steps=2)
    fp = model_fingerprint(sd1)
    good = _direction(gen.latent_shape, fingerprint=fp)
    good.check_compatible(gen, fp)  # no error
    with pytest.raises(SteeringMismatchError, match="fingerprint"):
        _direction(gen.latent_shape, fingerprint="0123456789abcdef").check_compatible(gen, fp)
    with pytest.raises(SteeringMismatchError, match="shape"):
        _direction((4, 8, 8), fingerprint=fp).check_compatible(gen, fp)


# ------------------------------------------------------------------------------------ weight rule
@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 64, 64)])
def test_weight_is_in_noise_standard_deviations_on_any_latent_size(shape):
    d = _direction(shape, seed=1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2000, *shape), generator=g)
    flat_d = d.direction.reshape(-1)
    before = noise.reshape(2000, -1) @ flat_d
    after = (noise + d.offset(2.5)).reshape(2000, -1) @ flat_d
    # the projection is N(0, 1) before and N(2.5, 1) after, whatever the dimension
    assert abs(float(before.mean())) < 0.1 and abs(float(before.std()) - 1) < 0.06
    assert abs(float(after.mean()) - 2.5) < 0.1 and abs(float(after.std()) - 1) < 0.06
    assert d.offset().norm() == pytest.approx(3.0)  # the recommended weight by default
    assert norm_fraction(10, (4, 128, 128)) == pytest.approx(10 / 256)


# --------------------------------------------------------------------------------------- learning
def test_svm_direction_separates_a_synthetic_dataset_and_points_to_the_positive_class():
    rng = np.random.default_rng(0)
    true = rng.normal(size=64)
    true /= np.linalg.norm(true)
    x = rng.normal(size=(200, 64))
    y = rng.random(200) < 0.5
    x += np.where(y, 3.0, -3.0)[:, None] * true  # classes 6 s.d. apart along `true`
    train = np.arange(200) < 120
    fit = fit_direction(x, y, train, c=0.01)
    assert fit.accuracy >= 0.98
    assert float(fit.direction @ true) > 0.8  # found the planted direction, oriented to the positive class
    assert np.linalg.norm(fit.direction) == pytest.approx(1.0)


def test_step_choice_and_split():
    assert choose_step({0: 0.6, 5: 0.92, 10: 0.99})[0] == 5
    step, why = choose_step({0: 0.6, 5: 0.8, 10: 0.7})
    assert step == 5 and "no recorded step" in why
    train = split_by_seed(range(10))
    assert len(train) == 6 and train == split_by_seed(range(10))


def test_learning_records_steps_saves_files_and_resumes_without_generating(sd1, tmp_path):
    calls = _count_unet_calls(sd1)
    kw = dict(images_per_class=5, record_steps=(0, 2), steps=3, seed=0, base_model="tiny", batch_size=10)
    dirs = learn_noise_directions(sd1, TWO, work_dir=tmp_path / "work", axis="gender", **kw)
    assert calls[0] > 0
    gen = SteeredGenerator(sd1, steps=3)
    woman, man = dirs
    assert woman.concept == "woman" and man.concept == "man"
    assert woman.directions.shape == (2, *gen.latent_shape)
    assert set(woman.metadata["heldout_accuracy"]) == {"0", "2"}
    assert woman.metadata["step"] in (0, 2)
    assert torch.allclose(man.direction, -woman.direction)  # two classes: +d and -d
    assert math.isclose(float(woman.direction.norm()), 1.0, rel_tol=1e-4)
    assert len(list((tmp_path / "work" / "latents").glob("*.safetensors"))) == 10
    path = woman.save(tmp_path / "out")
    back = load_noise_direction(path)
    back.check_compatible(gen, model_fingerprint(sd1))
    assert back.metadata["axis"] == "gender" and back.metadata["class_name"] == "woman"

    calls[0] = 0
    again = learn_noise_directions(sd1, TWO, work_dir=tmp_path / "work", axis="gender", **kw)
    assert calls[0] == 0  # every image and its latents came from the work folder
    assert torch.equal(again[0].direction, woman.direction)


def test_three_classes_give_one_vs_rest_directions(sd1, tmp_path):
    classes = {
        "light": "a photo of a light person",
        "dark": "a photo of a dark person",
        "x": "a photo of a man",
    }
    dirs = learn_noise_directions(
        sd1, classes, images_per_class=4, record_steps=(1,), steps=2, work_dir=tmp_path, base_model="tiny"
    )
    assert [d.concept for d in dirs] == ["light", "dark", "x"]
    assert all(d.metadata["recipe"]["scheme"] == "one-vs-rest" for d in dirs)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not torch.allclose(dirs[a].direction, -dirs[b].direction, atol=1e-3)


def test_bad_learning_input_is_refused(sd1, tmp_path):
    with pytest.raises(ValueError, match="at least 2 classes"):
        learn_noise_directions(sd1, {"woman": "a photo"}, work_dir=tmp_path, base_model="t")
    with pytest.raises(ValueError, match="out of range"):
        learn_noise_directions(sd1, TWO, steps=4, record_steps=(4,), work_dir=tmp_path, base_model="t")
    with pytest.raises(ValueError, match="NAME=PROMPT"):
        parse_class_specs(["woman a photo of a woman", "man=a photo of a man"])


# ------------------------------------------------------------------------------------ text offset
def test_text_offset_shape_round_trip_and_effect(sd1, tmp_path):
    gen = SteeredGenerator(sd1, steps=2, guidance=7.5)
    offset = learn_text_offset(sd1, "woman", "a photo of a woman", "a photo of a person", base_model="tiny")
    assert tuple(offset.tensor.shape) == gen.prompt_embeds_shape
    assert float(offset.tensor[0].abs().max()) == 0.0  # causal encoder: the start token is untouched
    back = load_text_offset(offset.save(tmp_path))
    back.check_compatible(gen, model_fingerprint(sd1))
    assert torch.equal(back.tensor, offset.tensor) and back.metadata["reduce"] == "tokens"
    with pytest.raises(SteeringFileError):
        load_noise_direction(tmp_path / "woman.text.safetensors")

    # weight 1 on the neutral prompt draws the class prompt's image (per-token offsets are exact)
    plain, steered, target = gen.generate(
        [
            ImageRequest("a photo of a person", seed=3),
            ImageRequest("a photo of a person", seed=3, prompt_embeds_offset=back.offset(1.0)),
            ImageRequest("a photo of a woman", seed=3),
        ]
    )
    pixels = [np.asarray(r.image, dtype=float) for r in (plain, steered, target)]
    assert np.abs(pixels[0] - pixels[2]).max() > 2  # the prompts draw different images
    assert np.abs(pixels[1] - pixels[2]).max() <= 1  # and the offset turns one into the other
    mean = learn_text_offset(
        sd1, "w", "a photo of a woman", "a photo of a person", base_model="t", reduce="mean"
    )
    assert tuple(mean.tensor.shape) == (gen.prompt_embeds_shape[1],)
    assert offset.pooled is None and offset.pooled_offset(1.0) is None  # SD 1.x has no pooled embedding


def test_sdxl_text_offset_also_moves_the_pooled_embedding(sdxl, sd1, tiny_model_dirs, tmp_path):
    gen = SteeredGenerator(sdxl, steps=2, guidance=7.5)
    offset = learn_text_offset(sdxl, "woman", "a photo of a woman", "a photo of a person", base_model="tiny")
    assert offset.pooled is not None and tuple(offset.pooled.shape) == (gen.pooled_embeds_dim,)
    back = load_text_offset(offset.save(tmp_path))
    back.check_compatible(gen, model_fingerprint(sdxl))
    assert back.pooled is not None and torch.equal(back.pooled, offset.pooled)

    tokens_only, both, target = gen.generate(
        [
            ImageRequest("a photo of a person", seed=3, prompt_embeds_offset=back.offset(1.0)),
            ImageRequest(
                "a photo of a person",
                seed=3,
                prompt_embeds_offset=back.offset(1.0),
                pooled_embeds_offset=back.pooled_offset(1.0),
            ),
            ImageRequest("a photo of a woman", seed=3),
        ]
    )
    pixels = [np.asarray(r.image, dtype=float) for r in (tokens_only, both, target)]
    assert np.abs(pixels[0] - pixels[2]).max() > 2  # the token offset alone leaves SDXL's pooled prompt
    assert np.abs(pixels[1] - pixels[2]).max() <= 1  # with the pooled offset, the class prompt's image

    sd1_gen = SteeredGenerator(sd1, steps=2)
    with pytest.raises(SteeringMismatchError, match="was made for tiny"):
        back.check_compatible(sd1_gen, model_fingerprint(sd1))
    # through a steering spec, as audits and `diffsteer generate --steering` apply it
    spec = SteeringSpec(text=(SteeringItem("woman", 2.0),), directions=(str(tmp_path),))
    steerer = Steerer(
        spec, gen, fingerprint=model_fingerprint(sdxl), library=SteeringLibrary([tmp_path]), axis_classes={}
    )
    steered, desc = steerer.steer(ImageRequest("a photo of a person", seed=3))
    assert desc["text"][0]["strength"] == 2.0
    assert torch.equal(steered.pooled_embeds_offset, 2.0 * back.pooled)
    assert torch.equal(steered.prompt_embeds_offset, 2.0 * back.tensor)

    result = runner.invoke(
        app,
        ["learn", "text", "--concept", "woman", "--prompt", "a photo of a woman",
         "--neutral-prompt", "a photo of a person", "--model", str(tiny_model_dirs["sdxl"]),
         "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"pooled offset of width {gen.pooled_embeds_dim}" in result.output
    assert load_text_offset(tmp_path / "cli" / "woman.text.safetensors").pooled is not None

    fp = model_fingerprint(sd1)  # a hand-made file with SD 1.x token shapes but a pooled tensor
    odd = TextOffset("w", torch.zeros(sd1_gen.prompt_embeds_shape), {"fingerprint": fp}, torch.zeros(8))
    with pytest.raises(SteeringMismatchError, match="no pooled embedding"):
        odd.check_compatible(sd1_gen, fp)
    with pytest.raises(ValueError, match="pooled_embeds_offset needs a pipeline with a pooled embedding"):
        sd1_gen.generate([ImageRequest("a", seed=0, pooled_embeds_offset=back.pooled_offset(1.0))])


# -------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", "woman=a photo of a woman"], "at least 2 classes"),
        (["--classes", "woman a photo", "--classes", "man=a photo of a man"], "NAME=PROMPT"),
        (
            ["--classes", "woman=a", "--classes", "man=b", "--steps", "4", "--record-steps", "0,9"],
            "out of range",
        ),
        (["--classes", "woman=a", "--classes", "man=b", "--record-steps", "x"], "not an integer"),
        (["--classes", "woman=a", "--classes", "man=b", "--calibrate-prompt", "a doctor"], "needs --axis"),
        (
            [
                "--classes",
                "woman=a",
                "--classes",
                "man=b",
                "--axis",
                "gender",
                "--calibrate-prompt",
                "a doctor",
                "--weight",
                "3",
            ],
            "not both",
        ),  # fmt: skip
        (
            ["--classes", "f=a", "--classes", "m=b", "--axis", "gender", "--calibrate-prompt", "a doctor"],
            "not a class of axis 'gender'",
        ),  # fmt: skip
    ],
)
def test_learn_noise_cli_bad_input_is_one_line(tiny_model_dirs, tmp_path, args, message):
    result = runner.invoke(
        app, ["learn", "noise", *args, "--model", str(tiny_model_dirs["sd1"]), "--work-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_learn_cli_writes_files(tiny_model_dirs, tmp_path):
    model = str(tiny_model_dirs["sd1"])
    result = runner.invoke(
        app,
        ["learn", "noise", "--classes", "woman=a photo of a woman", "--classes", "man=a photo of a man",
         "--images", "4", "--steps", "2", "--record-steps", "0,1", "--model", model,
         "--out", str(tmp_path / "dirs"), "--work-dir", str(tmp_path / "work"), "--axis", "gender"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held-out accuracy step 0:" in result.output
    assert (tmp_path / "dirs" / "woman.noise.safetensors").is_file()
    assert (tmp_path / "dirs" / "man.noise.safetensors").is_file()
    result = runner.invoke(
        app,
        ["learn", "text", "--concept", "woman", "--prompt", "a photo of a woman",
         "--neutral-prompt", "a photo of a person", "--model", model, "--out", str(tmp_path / "dirs")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_text_offset(tmp_path / "dirs" / "woman.text.safetensors").tensor.shape == (32, 32)


def test_learn_noise_cli_calibrates_the_weight_on_given_prompts(tiny_model_dirs, tmp_path):
    result = runner.invoke(
        app,
        ["learn", "noise", "--classes", "woman=a photo of a woman", "--classes", "man=a photo of a man",
         "--images", "4", "--steps", "2", "--record-steps", "0,1", "--model", str(tiny_model_dirs["sd1"]),
         "--out", str(tmp_path / "dirs"), "--work-dir", str(tmp_path / "work"), "--axis", "gender",
         "--calibrate-prompt", "a photo of a doctor", "--calibrate-weights", "1,3", "--calibrate-images", "2",
         "--classifier", str(tiny_model_dirs["clip"])],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "fair weight on 'a photo of a doctor'" in result.output
    record = json.loads((tmp_path / "work" / "calibration" / "calibration.json").read_text())
    assert record["prompts"][0]["prompt"] == "a photo of a doctor"
    # the random tiny CLIP is uncertain about every image, so no weight balances the mixture: the
    # largest swept weight is stored, and the output says the mixture was not balanced
    assert record["reached"] is False and "not balanced" in result.output
    saved = load_noise_direction(tmp_path / "dirs" / "man.noise.safetensors")
    assert saved.recommended_weight == 3.0 and saved.metadata["weight_calibration"]["tolerance"] == 0.1
