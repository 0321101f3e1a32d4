"""One interface for every steering kind: apply at a strength, a stored default strength, one calibration."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from typer.testing import CliRunner

from diffsteer import pictoworld
from diffsteer.attributes import ClipZeroShotClassifier
from diffsteer.cli import app
from diffsteer.experiments.calibrate import calibrate_fair_strength
from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.steering.files import SteeringFileError
from diffsteer.steering.hspace import HSpaceVector, load_hspace
from diffsteer.steering.kinds import METHODS, load_method
from diffsteer.steering.library import SteeringLibrary
from diffsteer.steering.method import SteeringMethod
from diffsteer.steering.noise import NoiseDirection
from diffsteer.steering.preset import FairSpec, SteeringSpec
from diffsteer.steering.steerer import Steerer
from diffsteer.steering.text_embedding import learn_text_offset

runner = CliRunner()


class _EveryImageCounted(ClipZeroShotClassifier):
    """The tiny random CLIP sees no person and is always uncertain; make it pick a class for every image."""

    def classify(self, images, axes, *, person_filter=True):
        decided = [dataclasses.replace(a, uncertain_prompt=None) for a in axes]
        return super().classify(images, decided, person_filter=False)


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs, tmp_path_factory):
    """The tiny SD1 with one steering of every kind for woman and man (gender), saved in one folder."""
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    gen = SteeredGenerator(pipe, steps=2)
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny", "block": gen.steered_block}
    folder = tmp_path_factory.mktemp("steering")
    torch.manual_seed(0)
    d = torch.randn(gen.latent_shape)
    for sign, cls in ((1, "woman"), (-1, "man")):
        gender = {**meta, "axis": "gender", "class_name": cls}
        HSpaceVector(cls, sign * 3.0 * torch.randn(gen.hspace_shape), gender).save(folder)
        NoiseDirection(cls, sign * d / d.norm(), {**gender, "recommended_weight": 4.0}).save(folder)
        learn_text_offset(pipe, cls, f"a photo of a {cls}", "a photo of a person", base_model="tiny",
                          axis="gender").save(folder)  # fmt: skip
    return pipe, gen, folder


def test_every_kind_implements_the_interface_and_loads_by_its_file_kind(tiny):
    _, gen, folder = tiny
    assert set(METHODS) == {"hspace", "noise", "text"}
    for kind, cls in METHODS.items():
        method = load_method(folder / f"woman.{kind}.safetensors")
        assert isinstance(method, cls) and isinstance(method, SteeringMethod) and method.kind == kind
        assert (method.axis, method.class_name) == ("gender", "woman")
        method.check_compatible(gen, model_fingerprint(gen.pipe))
        assert len(method.digest()) == 16
    with pytest.raises(SteeringFileError, match="not a noise one"):
        load_method(folder / "woman.hspace.safetensors", kind="noise")


@pytest.mark.parametrize(
    ("kind", "field", "default"),
    [("hspace", "hspace", 1.0), ("noise", "noise_offset", 4.0), ("text", "prompt_embeds_offset", 1.0)],
)
def test_apply_adds_the_scaled_tensor_and_a_stored_default_strength_is_used(
    tiny, tmp_path, kind, field, default
):
    _, _, folder = tiny
    method = load_method(folder / f"woman.{kind}.safetensors")
    assert method.default_strength == default  # uncalibrated files: the learned tensor (noise: its weight)
    plain = ImageRequest("a photo of a doctor", seed=3)
    once = getattr(method.apply(plain, 1.0), field)
    assert getattr(plain, field) is None and torch.linalg.vector_norm(once) > 0
    twice = getattr(method.apply(method.apply(plain, 1.0), 1.5), field)  # two applications add up
    assert torch.allclose(twice, 2.5 * once)
    assert torch.allclose(getattr(method.apply(plain), field), default * once)

    method.set_default_strength(1.75, rule="test rule", record={"kind": kind, "prompts": []})
    saved = load_method(method.save(tmp_path))
    assert saved.default_strength == 1.75 and saved.metadata["weight_calibration"]["kind"] == kind
    assert saved.metadata["weight_rule"] == "test rule"
    assert torch.allclose(getattr(saved.apply(plain), field), 1.75 * once)


def test_fair_generation_applies_each_file_at_its_stored_strength(tiny, tmp_path):
    _, gen, folder = tiny
    for cls in ("woman", "man"):
        vector = load_hspace(folder / f"{cls}.hspace.safetensors")
        vector.set_default_strength(2.5, rule="test", record={})
        vector.save(tmp_path)
    library = SteeringLibrary([tmp_path])
    steerer = Steerer(
        SteeringSpec(fair=FairSpec(("gender",), "hspace")), gen, fingerprint=model_fingerprint(gen.pipe),
        library=library, axis_classes={"gender": ("man", "woman")},
    )  # fmt: skip
    seen = set()
    for seed in range(4):
        request, desc = steerer.steer(ImageRequest("a photo of a doctor", seed=seed))
        chosen = desc["fair"]["gender"]
        seen.add(chosen)
        assert desc["hspace"][0]["strength"] == 2.5
        learned = load_hspace(folder / f"{chosen}.hspace.safetensors").vector
        assert torch.allclose(request.hspace, 2.5 * learned)
    assert seen == {"man", "woman"}


@pytest.mark.parametrize("kind", ["hspace", "text"])
def test_calibration_and_sweeps_work_for_hspace_vectors_and_text_offsets(
    tiny, tiny_model_dirs, tmp_path, kind
):
    pipe, _, folder = tiny
    methods = [load_method(folder / f"{cls}.{kind}.safetensors") for cls in ("woman", "man")]
    clip = _EveryImageCounted.from_pretrained(str(tiny_model_dirs["clip"]))
    record = calibrate_fair_strength(
        methods, ["a photo of a doctor"], out_dir=tmp_path, model="tiny", pipe=pipe, weights=[0.5, 2], n=2,
        steps=2, classifier=clip, batch_size=4,
    )  # fmt: skip
    assert record["kind"] == kind and record["weight_unit"] == methods[0].strength_unit
    prompt = record["prompts"][0]
    assert prompt["weights"] == [0.0, 0.5, 2.0]
    expected = 2.0 if prompt["fair_weight"] is None else prompt["fair_weight"]
    assert record["recommended_weight"] == expected
    # the strength is in every class's file, and the images of the sweeps were steered
    for m in methods:
        assert load_method(m.save(tmp_path / "out")).default_strength == expected
    sweep = json.loads((tmp_path / "a-photo-of-a-doctor" / "woman" / "sweep.json").read_text())
    assert sweep["kind"] == kind and sweep["frechet_distance"][2] > 0
    with pytest.raises(ValueError, match="one kind of steering"):
        calibrate_fair_strength(
            [methods[0], load_method(folder / "man.noise.safetensors")],
            ["a photo"],
            out_dir=tmp_path,
            pipe=pipe,
        )


def test_sweep_cli_sweeps_an_hspace_vector(tiny, tiny_model_dirs, tmp_path):
    _, _, folder = tiny
    base = ["sweep", "--prompt", "a photo of a doctor", "--model", str(tiny_model_dirs["sd1"]),
            "--classifier", str(tiny_model_dirs["clip"]), "--steps", "2", "--n", "2",
            "--out", str(tmp_path / "run"), "--directions", str(folder)]  # fmt: skip
    nothing = runner.invoke(app, base)
    assert nothing.exit_code == 2 and "--hspace" in nothing.output
    ok = runner.invoke(app, [*base, "--hspace", "woman", "--weights", "0,2"])
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "run" / "sweep.json").read_text())
    assert data["kind"] == "hspace" and data["weight_unit"] == "vector" and data["weights"] == [0.0, 2.0]
    assert data["frechet_distance"][1] > 0


def test_learn_hspace_calibrates_the_new_vector_with_its_axis_partners(tiny, tiny_model_dirs, tmp_path):
    pipe, _, folder = tiny
    out = tmp_path / "out"
    learn = ["learn", "hspace", "--model", str(tiny_model_dirs["sd1"]), "--concept", "woman",
             "--concept-prompt", "a photo of a woman", "--neutral-prompt", "a photo of a person",
             "--images", "2", "--steps", "2", "--inference-steps", "2", "--batch-size", "2",
             "--out", str(out), "--work-dir", str(tmp_path / "work")]  # fmt: skip
    calibrate = ["--calibrate-prompt", "a photo of a doctor", "--calibrate-images", "2",
                 "--calibrate-weights", "0.5,2", "--classifier", str(tiny_model_dirs["clip"])]  # fmt: skip
    no_axis = runner.invoke(app, [*learn, *calibrate])
    assert no_axis.exit_code == 2 and "--calibrate-prompt needs --axis" in no_axis.output
    alone = runner.invoke(app, [*learn, *calibrate, "--axis", "gender"])
    assert alone.exit_code == 2 and "missing man" in " ".join(alone.output.split())
    assert not (out / "woman.hspace.safetensors").exists()  # refused before learning

    ok = runner.invoke(app, [*learn, *calibrate, "--axis", "gender", "--directions", str(folder)])
    assert ok.exit_code == 0, ok.output
    assert "recommended strength" in ok.output
    woman, man = (load_hspace(out / f"{c}.hspace.safetensors") for c in ("woman", "man"))
    record = woman.metadata["weight_calibration"]
    assert record["classes"] == ["woman", "man"] and record["kind"] == "hspace"
    assert woman.default_strength == man.default_strength == record["recommended_weight"]
    assert torch.equal(man.vector, load_hspace(folder / "man.hspace.safetensors").vector)


def test_bundled_steering_files_load_and_the_axis_vectors_carry_their_calibrated_strength():
    folder = pictoworld.weights_dir() / "steering"
    files = sorted(folder.glob("*.safetensors"))
    # tools/learn_pictoworld_vectors.py: one anti-vector per unsafe concept the bundled world knows
    oracle_heads = json.loads((pictoworld.oracle_dir() / "config.json").read_text()).get("heads", {})
    anti = ["anti-violence"] + (["anti-drugs"] if "drugs" in oracle_heads else [])
    axis = [f"{c}.{kind}" for c in ("man", "woman", "light", "dark") for kind in ("hspace", "noise")]
    expected = {*(f"{a}.hspace" for a in anti), *axis}
    assert {p.name.removesuffix(".safetensors") for p in files} == expected
    for path in files:
        assert isinstance(load_method(path), SteeringMethod)
    assert load_hspace(folder / "anti-violence.hspace.safetensors").default_strength == 1.0  # no axis
    for cls in ("man", "woman", "light", "dark"):
        vector = load_hspace(folder / f"{cls}.hspace.safetensors")
        record = vector.metadata["weight_calibration"]
        assert record["kind"] == "hspace" and record["guidance"] == pictoworld.RECOMMENDED_GUIDANCE
        assert (record["n"], record["seed"], record["tolerance"]) == (32, 0, 0.1)
        assert vector.default_strength == record["recommended_weight"]
        for noise_cls in record["classes"]:  # the same prompts as the noise directions of the axis
            noise = load_method(folder / f"{noise_cls}.noise.safetensors")
            noise_prompts = [p["prompt"] for p in noise.metadata["weight_calibration"]["prompts"]]
            assert [p["prompt"] for p in record["prompts"]] == noise_prompts
