"""Applying steering files in audits and previews on tiny models: fair, safe, composed, checked."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.runs.store import RunStore
from diffsteer.steering.fair import fair_choice
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.noise import NoiseDirection
from diffsteer.steering.preset import SteeringItem, SteeringSpec, save_preset


@pytest.fixture(scope="module")
def vectors(tiny_model_dirs, tmp_path_factory):
    """man/woman h-space vectors and noise directions plus an anti-violence vector for the tiny SD1."""
    folder = tmp_path_factory.mktemp("vectors")
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    gen = SteeredGenerator(pipe, steps=2)
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny-sd1", "block": gen.steered_block}
    torch.manual_seed(0)
    for sign, cls in ((1, "woman"), (-1, "man")):
        vec = sign * 3.0 * torch.randn(gen.hspace_shape)
        HSpaceVector(cls, vec, {**meta, "axis": "gender", "class_name": cls}).save(folder)
        d = torch.randn(gen.latent_shape)
        NoiseDirection(cls, d / d.norm(), {**meta, "axis": "gender", "recommended_weight": 4.0}).save(folder)
    HSpaceVector("anti-violence", 2.0 * torch.randn(gen.hspace_shape), meta).save(folder)
    other = {**meta, "fingerprint": "0123456789abcdef", "base_model": "another-model"}
    HSpaceVector("alien", torch.randn(gen.hspace_shape), other).save(folder)
    return folder


@pytest.fixture()
def bench_file(write_benchmark):
    return write_benchmark(images_per_prompt=4, subjects=("doctor",))


def _rows(out):
    with RunStore.open_existing(out) as store:
        return [
            {
                "mitigation": r.mitigation,
                "seed": r.seed,
                "steering": r.steering,
                "png": store.images_dir / r.png,
            }
            for r in store.images()
        ]


def _pixels(row):
    return row["png"].read_bytes()


def test_fair_mitigations_pair_seeds_and_assign_classes(tiny_model_dirs, vectors, bench_file, tmp_path):
    out = tmp_path / "run"
    config = AuditConfig(
        model=str(tiny_model_dirs["sd1"]),
        benchmark=str(bench_file),
        classifier=str(tiny_model_dirs["clip"]),
        steps=2,
        mitigations=("none", "hspace-fair", "noise-fair"),
        steering=SteeringSpec(directions=(str(vectors),)),
        batch_size=4,
    )
    result = run_audit(config, out)
    assert result.generated == 12
    rows = _rows(out)
    by = {(r["mitigation"], r["seed"]): r for r in rows}
    for mitigation in ("hspace-fair", "noise-fair"):
        for seed in range(4):
            steering = by[(mitigation, seed)]["steering"]
            assert steering["fair"] == {"gender": fair_choice(seed, ["man", "woman"])}
            kind = "hspace" if mitigation == "hspace-fair" else "noise"
            (applied,) = steering[kind]
            assert applied["file"] == f"{steering['fair']['gender']}.{kind}.safetensors"
            assert len(applied["sha"]) == 16
            # same seed, same prompt: the steering is the only difference from the baseline image
            assert _pixels(by[(mitigation, seed)]) != _pixels(by[("none", seed)])
    assert by[("noise-fair", 0)]["steering"]["noise"][0]["strength"] == 4.0  # recommended weight
    mitigations = {r.mitigation for r in result.summary.results}
    assert mitigations == {"none", "hspace-fair", "noise-fair"}


def test_steering_options_add_a_steered_mitigation_and_a_new_vector_is_not_reused(
    tiny_model_dirs, vectors, bench_file, tmp_path
):
    out = tmp_path / "run"
    spec = SteeringSpec(
        hspace=(SteeringItem("woman", 1.0), SteeringItem("anti-violence", 0.5)), directions=(str(vectors),)
    )
    config = AuditConfig(
        model=str(tiny_model_dirs["sd1"]),
        benchmark=str(bench_file),
        classifier=str(tiny_model_dirs["clip"]),
        steps=2,
        steering=spec,
        batch_size=4,
    )
    result = run_audit(config, out)
    assert result.generated == 8  # none + steered
    steered = [r for r in _rows(out) if r["mitigation"] == "steered"]
    assert [s["strength"] for s in steered[0]["steering"]["hspace"]] == [1.0, 0.5]
    # overwrite the woman vector: the same command must regenerate, never reuse the old images
    gen = SteeredGenerator(load_pipeline(str(tiny_model_dirs["sd1"])), steps=2)
    from diffsteer.steering.hspace import load_hspace

    old = load_hspace(vectors / "woman.hspace.safetensors")
    HSpaceVector("woman", old.vector + 1.0, old.metadata).save(vectors)
    try:
        again = run_audit(config, out, resume=True)
        assert again.generated == 4
    finally:
        HSpaceVector("woman", old.vector, old.metadata).save(vectors)
    assert gen.hspace_shape == tuple(old.vector.shape)


def test_responsible_prompt_switches_fair_generation_on(tiny_model_dirs, vectors, tmp_path):
    from diffsteer.experiments.preview import generate_preview

    spec = SteeringSpec(responsible=True, directions=(str(vectors),))
    plain = generate_preview(
        "a photo of a doctor", tmp_path / "a", model=str(tiny_model_dirs["sd1"]), n=2, steps=2
    )
    asked = generate_preview(
        "a photo of a doctor, either male or female",
        tmp_path / "b",
        model=str(tiny_model_dirs["sd1"]),
        n=2,
        steps=2,
        steering=spec,
    )
    same_prompt = generate_preview(
        "a photo of a doctor, either male or female",
        tmp_path / "c",
        model=str(tiny_model_dirs["sd1"]),
        n=2,
        steps=2,
    )
    assert len(plain) == len(asked) == 3
    assert asked[0].read_bytes() != same_prompt[0].read_bytes()


def test_cli_rejects_a_vector_made_for_another_model(tiny_model_dirs, vectors, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "a photo of a doctor",
            "--model",
            str(tiny_model_dirs["sd1"]),
            "--n",
            "1",
            "--steps",
            "2",
            "--hspace",
            str(vectors / "alien.hspace.safetensors"),
            "--out",
            str(tmp_path / "g"),
        ],
    )
    assert result.exit_code == 2
    assert "made for another-model" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(
        app,
        [
            "generate",
            "a photo of a doctor",
            "--model",
            str(tiny_model_dirs["sd1"]),
            "--n",
            "1",
            "--hspace",
            "nobody",
            "--directions",
            str(vectors),
            "--out",
            str(tmp_path / "g"),
        ],
    )
    assert missing.exit_code == 2 and "no hspace steering file named 'nobody'" in missing.output
    assert "available: " in missing.output and "woman" in missing.output


def test_cli_generate_rejects_unknown_hspace_branches_before_loading_a_model(tmp_path):
    # The model folder does not exist: the branches error must come first, not a load failure.
    args = ["generate", "a photo of a doctor", "--model", str(tmp_path / "no-model")]
    result = CliRunner().invoke(app, [*args, "--hspace-branches", "all"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown --hspace-branches 'all': choose conditional or both" in result.output


def test_cli_generate_with_a_preset_and_composed_vectors(tiny_model_dirs, vectors, tmp_path):
    preset = save_preset(
        SteeringSpec(
            hspace=(SteeringItem("woman", 1.0),),
            noise=(SteeringItem("man", 2.0),),
            directions=(str(vectors),),
        ),
        tmp_path / "preset.yaml",
    )
    args = [
        "generate",
        "a photo of a doctor",
        "--model",
        str(tiny_model_dirs["sd1"]),
        "--n",
        "2",
        "--steps",
        "2",
    ]
    steered = CliRunner().invoke(app, [*args, "--steering", str(preset), "--out", str(tmp_path / "s")])
    plain = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "p")])
    assert steered.exit_code == 0 and plain.exit_code == 0, steered.output + plain.output
    assert (tmp_path / "s" / "00000.png").read_bytes() != (tmp_path / "p" / "00000.png").read_bytes()
    bad = CliRunner().invoke(
        app,
        [
            *args,
            "--fair",
            "gender",
            "--mitigation",
            "intervention",
            "--directions",
            str(vectors),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 2 and "cannot be combined" in bad.output
