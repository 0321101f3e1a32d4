"""A catalogue of bad inputs, one row each: the command fails with exit status 2 and exactly one line on
stderr that names the bad input, before any expensive work, and the corrected command into the same
output folder then succeeds without --resume or --force (a failed start pins nothing)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
import torch
from typer.testing import CliRunner

from diffsteer.cli import app
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.noise import NoiseDirection

runner = CliRunner()

BENCH = """\
name: tiny
axes: [gender]
images_per_prompt: 1
prompts:
  - text: a photo of a doctor
    group: profession
    subject: doctor
"""


@pytest.fixture(scope="module")
def ctx(tiny_model_dirs, tmp_path_factory):
    """Paths the catalogue's commands refer to: tiny models, steering files, broken inputs, a finished run."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {"sd1": tiny_model_dirs["sd1"], "clip": tiny_model_dirs["clip"], "root": root}
    (root / "bench.yaml").write_text(BENCH)
    paths["bench"] = root / "bench.yaml"
    (root / "broken.yaml").write_text("prompts:\n  - text: ''\n")
    paths["broken_yaml"] = root / "broken.yaml"

    # a pipeline folder whose U-Net is stored only as a pickle (.bin): refused, never unpickled
    binonly = root / "binonly"
    shutil.copytree(tiny_model_dirs["sd1"], binonly)
    for weights in (binonly / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    paths["binonly"] = binonly
    single = root / "checkpoint.safetensors"
    shutil.copy(next((tiny_model_dirs["sd1"] / "unet").glob("*.safetensors")), single)
    paths["single"] = single
    noclass = root / "noclass"
    noclass.mkdir()
    (noclass / "model_index.json").write_text("{}")
    paths["noclass"] = noclass
    notmodel = root / "notmodel"
    notmodel.mkdir()
    paths["notmodel"] = notmodel

    reference = root / "reference"
    reference.mkdir()
    (reference / "labels.csv").write_text("file,axis,label\nmissing.png,gender,woman\n")
    paths["bad_reference"] = reference
    (root / "a-file").write_text("not a folder")
    paths["a_file"] = root / "a-file"

    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    gen = SteeredGenerator(pipe, steps=1)
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny-sd1", "block": gen.steered_block}
    directions = root / "directions"
    torch.manual_seed(0)
    HSpaceVector("alien", torch.randn(gen.hspace_shape), {**meta, "fingerprint": "0123456789abcdef"}).save(
        directions
    )
    d = torch.randn(gen.latent_shape)
    woman = {**meta, "axis": "gender", "recommended_weight": 4.0}
    NoiseDirection("woman", d / d.norm(), woman).save(directions)
    paths["directions"] = directions
    paths["noise"] = directions / "woman.noise.safetensors"

    run = root / "finished-run"
    done = runner.invoke(app, _audit(paths, {"--out": str(run)}))
    assert done.exit_code == 0, done.output
    paths["run"] = run
    # a finished run whose summary.json was emptied (by hand, or by a tool without atomic writes)
    run_empty_summary = root / "run-empty-summary"
    shutil.copytree(run, run_empty_summary)
    (run_empty_summary / "summary.json").write_text("")
    paths["run_empty_summary"] = run_empty_summary
    empty_summary = root / "empty-summary"
    empty_summary.mkdir()
    (empty_summary / "summary.json").write_text("")
    paths["empty_summary"] = empty_summary
    return {k: str(v) for k, v in paths.items()}


def _flatten(command: list[str], options: dict[str, str | None]) -> list[str]:
    args = list(command)
    for flag, value in options.items():
        if value is not None:
            args += [flag] if value == "" else [flag, value]
    return args


def _audit(p, over):
    base = {"--model": p["sd1"], "--benchmark": p["bench"], "--classifier": p["clip"], "--steps": "1",
            "--batch-size": "1", "--out": p["out"] if "out" in p else None}  # fmt: skip
    return _flatten(["audit"], {**base, **over})


def _generate(p, over):
    base = {"--model": p["sd1"], "--n": "1", "--steps": "1", "--out": p["out"]}
    prompt = over.pop("PROMPT", "a photo of a doctor")
    return _flatten(["generate", prompt], {**base, **over})


def _learn_noise(p, over):
    base = {"--model": p["sd1"], "--images": "3", "--steps": "2", "--record-steps": "0,1",
            "--out": p["out"], "--work-dir": p["out"] + "-work"}  # fmt: skip
    classes = over.pop("CLASSES", ["woman=a photo of a woman", "man=a photo of a man"])
    return _flatten(["learn", "noise", *[a for c in classes for a in ("--classes", c)]], {**base, **over})


def _learn_hspace(p, over):
    base = {"--concept": "woman", "--concept-prompt": "a photo of a woman",
            "--neutral-prompt": "a photo of a person", "--images": "2", "--steps": "1",
            "--batch-size": "1", "--inference-steps": "1",
            "--model": p["sd1"], "--out": p["out"], "--work-dir": p["out"] + "-work"}  # fmt: skip
    return _flatten(["learn", "hspace"], {**base, **over})


def _learn_text(p, over):
    base = {"--concept": "woman", "--prompt": "a photo of a woman", "--neutral-prompt": "a photo of a person",
            "--model": p["sd1"], "--out": p["out"]}  # fmt: skip
    return _flatten(["learn", "text"], {**base, **over})


def _sweep(p, over):
    base = {"--noise-direction": p["noise"], "--prompt": "a photo of a doctor", "--model": p["sd1"],
            "--classifier": p["clip"], "--steps": "1", "--n": "2", "--weights": "0,2",
            "--out": p["out"]}  # fmt: skip
    return _flatten(["sweep"], {**base, **over})


def _report(p, over):
    return _flatten(["report", over.pop("RUN", p["run"])], over)


def _compare(p, over):
    return _flatten(["compare", over.pop("A", p["run"]), over.pop("B", p["run"])], over)


def _export(p, over):
    return _flatten(["export", over.pop("RUN", p["run"]), over.pop("PATH", p["out"] + ".csv")], over)


def _studio(p, over):
    return _flatten(["studio"], {"--model": p["sd1"], "--steps": "1", **over})


@dataclass(frozen=True)
class Case:
    id: str
    build: object  # (paths, overrides) -> argv
    over: dict
    names: str  # what the error line must contain; {key} is filled from the paths
    follow_up: bool = True  # the corrected command runs (a studio would serve forever: not run)


CASES = [
    # audit: the model
    Case("audit-hub-id-offline", _audit, {"--model": "nobody-xyz/no-such-model"}, "nobody-xyz/no-such-model"),
    Case("audit-model-missing-folder", _audit, {"--model": "./no/such/folder"}, "./no/such/folder"),
    Case("audit-model-not-a-pipeline", _audit, {"--model": "{notmodel}"}, "model_index.json"),
    Case("audit-model-bin-only", _audit, {"--model": "{binonly}"}, ".bin"),
    Case("audit-model-single-file", _audit, {"--model": "{single}"}, "single-file checkpoint"),
    Case("audit-model-no-class-name", _audit, {"--model": "{noclass}"}, "_class_name"),
    Case("audit-dtype", _audit, {"--dtype": "float8"}, "float8"),
    Case("audit-device-unknown", _audit, {"--device": "tpu9"}, "tpu9"),
    *(
        [Case("audit-device-cuda-absent", _audit, {"--device": "cuda"}, "--device cpu")]
        if not torch.cuda.is_available()
        else []
    ),  # fmt: skip
    # audit: what to measure
    Case("audit-benchmark-unknown", _audit, {"--benchmark": "nope"}, "nope"),
    Case("audit-benchmark-malformed", _audit, {"--benchmark": "{broken_yaml}"}, "broken.yaml:2"),
    Case("audit-axis", _audit, {"--axes": "age"}, "age"),
    Case("audit-prompt-types", _audit, {"--prompt-types": "bogus"}, "bogus"),
    Case("audit-mitigation", _audit, {"--mitigation": "magic"}, "magic"),
    Case("audit-images-per-prompt", _audit, {"--images-per-prompt": "0"}, "--images-per-prompt"),
    Case("audit-steps", _audit, {"--steps": "0"}, "--steps"),
    Case("audit-guidance", _audit, {"--guidance": "-1"}, "--guidance"),
    Case("audit-batch-size", _audit, {"--batch-size": "0"}, "--batch-size"),
    Case("audit-seed-negative", _audit, {"--seed": "-5"}, "--seed"),
    Case("audit-seed-overflow", _audit, {"--seed": "99999999999999999999"}, "--seed"),
    Case("audit-executor", _audit, {"--executor": "slurm"}, "slurm"),
    Case("audit-hspace-branches", _audit, {"--hspace-branches": "all"}, "--hspace-branches"),
    # audit: steering files
    Case("audit-hspace-unknown", _audit, {"--hspace": "nosuch"}, "nosuch"),
    Case("audit-hspace-other-model", _audit, {"--hspace": "alien", "--directions": "{directions}"}, "alien"),
    Case("audit-noise-unknown", _audit, {"--noise-direction": "nosuch:2"}, "nosuch"),
    Case("audit-steering-preset-missing", _audit, {"--steering": "{root}/nope.yaml"}, "nope.yaml"),
    Case("audit-fair-method", _audit, {"--fair": "gender", "--fair-method": "magic"}, "magic"),
    # audit: judges and places
    Case("audit-classifier-missing", _audit, {"--classifier": "{root}/no-clip"}, "no-clip"),
    Case("audit-classifier-not-clip", _audit, {"--classifier": "{notmodel}"}, "notmodel"),
    Case("audit-reference-missing", _audit, {"--reference": "{root}/no-reference"}, "--reference"),
    Case("audit-reference-bad-labels", _audit, {"--reference": "{bad_reference}"}, "missing.png"),
    Case("audit-out-is-a-file", _audit, {"--out": "{a_file}"}, "--out"),
    Case("audit-out-under-a-file", _audit, {"--out": "{a_file}/run"}, "--out"),
    # generate
    Case("generate-n", _generate, {"--n": "0"}, "--n"),
    Case("generate-model", _generate, {"--model": "./no/such/folder"}, "./no/such/folder"),
    Case("generate-mitigation", _generate, {"--mitigation": "magic"}, "magic"),
    Case("generate-dtype", _generate, {"--dtype": "float8"}, "float8"),
    Case("generate-empty-prompt", _generate, {"PROMPT": " "}, "prompt"),
    # learn
    Case("learn-noise-class-spec", _learn_noise, {"CLASSES": ["woman a photo", "man=a man"]}, "NAME=PROMPT"),
    Case("learn-noise-record-steps", _learn_noise, {"--record-steps": "0,9"}, "out of range"),
    Case("learn-noise-images", _learn_noise, {"--images": "1"}, "images_per_class"),
    Case("learn-noise-model", _learn_noise, {"--model": "{binonly}"}, ".bin"),
    Case("learn-hspace-empty-prompt", _learn_hspace, {"--concept-prompt": " "}, "concept prompt"),
    Case("learn-text-reduce", _learn_text, {"--reduce": "magic"}, "magic"),
    # sweep
    Case("sweep-weights", _sweep, {"--weights": "1,x"}, "'x'"),
    Case("sweep-direction-missing", _sweep, {"--noise-direction": "{root}/nope.noise.safetensors"}, "nope"),
    Case("sweep-n", _sweep, {"--n": "0"}, "images per weight"),
    # report, compare, export
    Case("report-no-run", _report, {"RUN": "{root}/no-run"}, "no-run"),
    Case("report-reference", _report, {"--reference": "{root}/no-reference"}, "no-reference"),
    Case("report-empty-summary", _report, {"RUN": "{run_empty_summary}"}, "summary.json"),
    Case("compare-no-run", _compare, {"A": "{root}/no-run"}, "no-run"),
    Case("compare-empty-summary", _compare, {"B": "{empty_summary}"}, "empty-summary/summary.json"),
    Case("compare-json-under-a-file", _compare, {"--json": "{a_file}/x.json"}, "a-file"),
    Case("export-suffix", _export, {"PATH": "{out}.txt"}, ".txt"),
    Case("export-no-run", _export, {"RUN": "{root}/no-run"}, "no-run"),
    # studio (checked before anything is served)
    Case("studio-model", _studio, {"--model": "./no/such/folder"}, "./no/such/folder", follow_up=False),
    Case("studio-dtype-device", _studio, {"--device": "tpu9"}, "tpu9", follow_up=False),
]


def _fill(value, paths):
    if isinstance(value, list):
        return [_fill(v, paths) for v in value]
    return value.format(**paths) if isinstance(value, str) else value


def test_the_catalogue_is_large_and_covers_every_command():
    assert len(CASES) >= 40
    commands = {c.build.__name__.split("_")[1] for c in CASES}
    assert commands >= {"audit", "generate", "learn", "sweep", "report", "compare", "export", "studio"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_the_corrected_command_succeeds(case, ctx, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paths = {**ctx, "out": str(tmp_path / "out")}
    over = {k: _fill(v, paths) for k, v in case.over.items()}
    result = runner.invoke(app, case.build(paths, dict(over)))
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and case.names.format(**paths) in lines[0], lines[0]
    assert not (tmp_path / "out" / "results.sqlite").exists()  # a failed start pins no config
    if case.follow_up:
        fixed = runner.invoke(app, case.build(paths, {}))
        assert fixed.exit_code == 0, fixed.output


def test_an_interrupted_force_leaves_no_stale_summary_or_report(ctx, tmp_path, monkeypatch):
    """--force deletes the old summary.json and report.html first: a forced rerun that dies leaves
    nothing for `report` or `compare` to mistake for its result."""
    import diffsteer.audit

    run = tmp_path / "run"
    shutil.copytree(ctx["run"], run)
    assert (run / "summary.json").is_file() and (run / "report.html").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C would, after the images, before the labels

    monkeypatch.setattr(diffsteer.audit, "label_missing", killed)
    paths = {**ctx, "out": str(run)}
    runner.invoke(app, _audit(paths, {"--force": ""}))
    assert not (run / "summary.json").exists() and not (run / "report.html").exists()
    stale = runner.invoke(app, ["compare", ctx["run"], str(run)])
    assert stale.exit_code == 2 and "summary.json" in stale.stderr


@pytest.mark.parametrize(
    "argv, names",
    [
        (["audit", "--steps", "x"], "--steps"),
        (["audit", "--no-such-flag"], "--no-such-flag"),
        (["export"], "run_dir"),
        (["learn", "noise"], "--classes"),
    ],
    ids=["not-an-integer", "unknown-flag", "missing-argument", "missing-option"],
)
def test_the_command_line_rejects_malformed_flags_in_one_line(argv, names, monkeypatch, capsys):
    """What click itself rejects (a value that is not a number, a flag that does not exist) is also
    one line through the `diffsteer` entry point, instead of a usage box."""
    import signal
    import sys

    from diffsteer import cli

    monkeypatch.setattr(sys, "argv", ["diffsteer", *argv])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stop:
            cli.main()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert stop.value.code == 2
    assert len(lines) == 1 and lines[0].startswith("error:") and names in lines[0], lines


def test_a_full_disk_is_one_line_and_the_rerun_finishes(ctx, tmp_path, monkeypatch):
    import errno

    from diffsteer.runs.store import RunStore

    def full(self, name, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.images_dir / name))

    paths = {**ctx, "out": str(tmp_path / "out")}
    with monkeypatch.context() as patch:
        patch.setattr(RunStore, "_write_png", full)
        result = runner.invoke(app, _audit(paths, {}))
    # the disk fills up during the work, so progress lines may precede the one error line
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert result.exit_code == 2 and errors == lines[-1:], result.output
    assert "No space left on device" in errors[0] and str(tmp_path / "out" / "images") in errors[0]
    assert "free some space" in errors[0]
    assert runner.invoke(app, _audit(paths, {})).exit_code == 0


def test_a_noise_direction_at_chance_stores_no_weight_and_asks_for_one(ctx, tmp_path):
    """The random tiny model cannot tell "woman" from "man" in its latents: the learned direction is
    at chance, which is said loudly, and no weight is stored that would later be applied blindly."""
    from diffsteer.steering.noise import load_noise_direction

    paths = {**ctx, "out": str(tmp_path / "dirs")}
    learned = runner.invoke(app, _learn_noise(paths, {"--axis": "gender"}))
    assert learned.exit_code == 0, learned.output
    assert "warning: noise direction 'woman' is no better than chance" in learned.stderr
    assert "at chance level: no recommended weight" in learned.stdout
    saved = load_noise_direction(tmp_path / "dirs" / "woman.noise.safetensors")
    assert "recommended_weight" not in saved.metadata
    generate = ["generate", "a photo of a doctor", "--model", ctx["sd1"], "--n", "1", "--steps", "1",
                "--directions", str(tmp_path / "dirs"), "--out", str(tmp_path / "look")]  # fmt: skip
    unweighted = runner.invoke(app, [*generate, "--noise-direction", "woman"])
    lines = [ln for ln in unweighted.stderr.splitlines() if ln.strip()]
    assert unweighted.exit_code == 2 and len(lines) == 1 and "no recommended weight" in lines[0], lines
    assert runner.invoke(app, [*generate, "--noise-direction", "woman:2"]).exit_code == 0
