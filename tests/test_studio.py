"""The studio's logic without a browser, on pictoworld with its bundled steering files.

One session (one loaded model) serves every test; "a photo of a doctor" is the prompt because
pictoworld draws almost only men for it, so a gender vector's effect is plain to see.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.generate import SteeredGenerator
from diffsteer.models import model_fingerprint
from diffsteer.runs.store import RunStore
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.library import bundled_steering_dir
from diffsteer.steering.preset import load_preset
from diffsteer.studio.charts import grid, histogram, shares_table
from diffsteer.studio.session import StudioError, StudioSession
from diffsteer.testing import tiny_sd_pipeline

PROMPT = "a photo of a doctor"
STEPS = 10
N = 16


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A user's folder: a copy of the bundled woman vector, an unreadable file, another model's vector."""
    folder = tmp_path_factory.mktemp("my_vectors")
    shutil.copy(
        bundled_steering_dir("pictoworld") / "woman.hspace.safetensors", folder / "her.hspace.safetensors"
    )
    (folder / "broken.hspace.safetensors").write_bytes(b"this is not a safetensors file")
    pipe = tiny_sd_pipeline("sd1")
    gen = SteeredGenerator(pipe, steps=2)
    meta = {
        "base_model": "tiny-sd1",
        "fingerprint": model_fingerprint(pipe),
        "block": gen.steered_block,
        "shape": list(gen.hspace_shape),
    }
    HSpaceVector("elsewhere", torch.randn(gen.hspace_shape), meta).save(folder)
    return folder


@pytest.fixture(scope="module")
def session(user_dir) -> StudioSession:
    # guidance 7.5: the bundled vectors act strongly there (at pictoworld's default guidance they barely move
    # a doctor's gender in 16 images, see benchmarks/RESULTS.md); these tests check the studio's wiring
    return StudioSession("pictoworld", [user_dir], steps=STEPS, guidance=7.5)


@pytest.fixture(scope="module")
def woman_run(session):
    spec = session.spec({("woman", "hspace"): 1.0})
    return session.generate(PROMPT, spec, N, 0)


def test_lists_the_bundled_files_and_says_why_others_are_unusable(session):
    found = {e.key for e in session.available()}
    for name in ("woman", "man", "light", "dark"):
        assert (name, "hspace") in found and (name, "noise") in found
    assert ("anti-violence", "hspace") in found
    assert ("her", "hspace") in found
    assert ("elsewhere", "hspace") not in found and ("broken", "hspace") not in found
    problems = session.problems()
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any("broken.hspace.safetensors" in p and "not a readable safetensors" in p for p in problems)
    assert any("elsewhere" in p and "tiny-sd1" in p for p in problems)
    gender = {o.axis: o for o in session.fair_options()}["gender"]
    assert set(gender.classes) == {"man", "woman"} and "hspace" in gender.methods


def test_the_woman_vector_moves_the_gender_histogram(woman_run):
    run = woman_run
    assert len(run.baseline) == len(run.steered) == N and run.seeds == list(range(N))
    base, steered = run.baseline_shares["gender"], run.steered_shares["gender"]
    assert base.counted >= N // 2 and steered.counted >= N // 2
    assert steered.share("woman") >= base.share("woman") + 0.3, (base, steered)
    assert all(d["hspace"][0]["file"] == "woman.hspace.safetensors" for d in run.steering)
    # what the page shows: grids, one chart panel per axis with bars at the shares, the numbers
    assert grid(run.steered).width >= 4 * 32 * 4
    fig = histogram(run.steered_shares, "Steered")
    panel = fig.axes[0]
    assert len(fig.axes) == 2
    assert [round(p.get_height(), 6) for p in panel.patches] == [
        round(steered.share(c), 6) for c in steered.counts
    ]
    woman = f"{steered.share('woman'):.2f} ({steered.counts['woman']}/{steered.counted})"
    assert "| gender | woman | " in shares_table(run) and woman in shares_table(run)


def test_steered_and_baseline_images_share_their_seeds(session, woman_run):
    # strength 0 adds nothing: if image k starts from the baseline's noise, the pictures are the same
    zero = session.generate(PROMPT, session.spec({("woman", "hspace"): 0.0}), N, 0)
    for a, b in zip(zero.baseline, zero.steered, strict=True):
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max()
        assert diff <= 2
    # ...and the baseline is the one shown before (kept for the same prompt and seeds)
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(zero.baseline, woman_run.baseline, strict=True)
    )


def test_fair_generation_moves_shares_toward_the_target(session, woman_run):
    spec = session.spec(fair={"gender": {"man": 0.5, "woman": 0.5}})
    run = session.generate(PROMPT, spec, N, 0)
    assert run.targets == {"gender": {"man": 0.5, "woman": 0.5}}
    base, steered = run.baseline_shares["gender"], run.steered_shares["gender"]
    assert abs(steered.share("woman") - 0.5) <= abs(base.share("woman") - 0.5) - 0.2, (base, steered)
    assert {d["fair"]["gender"] for d in run.steering} == {"man", "woman"}
    skewed = session.spec(fair={"gender": {"man": 1, "woman": 3}})
    assert skewed.fair.target == {"man": 0.25, "woman": 0.75}


def test_exported_preset_reads_back_as_the_same_choice(session, user_dir, tmp_path):
    bundled = session.spec(
        {("woman", "hspace"): 1.5, ("dark", "noise"): 2.0},
        fair={"gender": {"man": 0.3, "woman": 0.7}},
        safe=True,
    )
    path = session.export_preset(bundled, tmp_path / "a" / "preset.yaml")
    assert load_preset(path) == bundled
    assert bundled.directions == ()  # bundled files need no folder
    assert path.read_text().startswith("# made with diffsteer studio for model pictoworld")
    mine = session.spec({("her", "hspace"): 1.0})
    assert mine.directions and mine.directions[0] == str(user_dir.resolve())
    assert load_preset(session.export_preset(mine, tmp_path / "b" / "preset.yaml")) == mine


def test_an_exported_preset_drives_audit_and_generate(session, tmp_path, monkeypatch):
    preset = session.export_preset(session.spec({("her", "hspace"): 1.0}), tmp_path / "preset.yaml")
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"name": "one", "axes": ["gender"], "prompts": [PROMPT]}))
    monkeypatch.chdir(tmp_path)  # the preset must not depend on the working directory
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "audit",
            "--steering",
            str(preset),
            "--benchmark",
            str(bench),
            "--images-per-prompt",
            "6",
            "--steps",
            str(STEPS),
            "--out",
            "run",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = {r["mitigation"]: r for r in summary["results"] if r["prompt"] is None and r["axis"] == "gender"}
    assert set(rows) == {"none", "steered"}
    assert rows["steered"]["counts"]["woman"] > rows["none"]["counts"]["woman"]
    with RunStore.open_existing(tmp_path / "run") as store:
        steered = store.images(mitigation="steered")
    assert len(steered) == 6
    assert all(r.steering["hspace"][0]["file"] == "her.hspace.safetensors" for r in steered)
    result = runner.invoke(
        app, ["generate", PROMPT, "--steering", str(preset), "--n", "2", "--steps", "4", "--out", "look"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "look" / "grid.png").is_file()


def test_the_studio_counts_what_an_audit_of_its_preset_counts(session, tmp_path):
    """Same model, settings, seeds and steering: the studio's shares are the audit's rows, image for
    image (one counting rule, the audit's), for the baseline and the steered images."""
    spec = session.spec({("her", "hspace"): 1.0})
    preset = session.export_preset(spec, tmp_path / "preset.yaml")
    shown = session.generate(PROMPT, spec, n=6, seed=0)
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"name": "one", "axes": ["gender", "skin_tone"], "prompts": [PROMPT]}))
    config = AuditConfig(
        benchmark=str(bench),
        images_per_prompt=6,
        steps=STEPS,
        guidance=7.5,
        steering=load_preset(preset),
        mitigations=("none",),
    )
    summary = run_audit(config, tmp_path / "run", reference=None).summary
    for mitigation, shares in (("none", shown.baseline_shares), ("steered", shown.steered_shares)):
        for axis in ("gender", "skin_tone"):
            row = summary.aggregate(mitigation, axis)
            detail = summary.aggregate_details()[(mitigation, axis)]
            assert row is not None and row.n_counted + row.n_dropped + detail.n_uncertain == 6
            shown_counts = (shares[axis].counts, shares[axis].uncertain, shares[axis].dropped)
            assert shown_counts == (row.counts, detail.n_uncertain, row.n_dropped), (mitigation, axis)


def test_mistakes_are_one_line_messages(session, tmp_path):
    nothing = session.spec()
    cases = {
        "the prompt is empty": lambda: session.generate("   ", nothing, 4, 0),
        "between 1 and": lambda: session.generate(PROMPT, nothing, 0, 0),
        "tiny-sd1": lambda: session.spec({("elsewhere", "hspace"): 1.0}),
        "no h-space vector named 'nobody'": lambda: session.spec({("nobody", "hspace"): 1.0}),
        "one fair axis at a time": lambda: session.spec(
            fair={"gender": {"man": 0.2, "woman": 0.8}, "skin_tone": None}
        ),
        "nothing to export": lambda: session.export_preset(nothing, tmp_path / "p.yaml"),
    }
    for expected, call in cases.items():
        with pytest.raises(StudioError) as info:
            call()
        assert expected in str(info.value) and "\n" not in str(info.value)


def test_page_handlers_show_errors_as_messages(session, tmp_path):
    pytest.importorskip("gradio")
    from diffsteer.studio.app import StudioHandlers

    entries = session.available()
    fair = [(o.axis, o.classes) for o in session.fair_options()]
    handlers = StudioHandlers(session, entries, fair, tmp_path)

    def values(on: set[tuple[str, str]]) -> list:
        targets = [0.5 for _, classes in fair for _ in classes]
        return [
            "hspace",
            False,
            False,
            *[e.key in on for e in entries],
            *[1.0] * len(entries),
            *[False] * len(fair),
            *targets,
        ]

    with pytest.warns(UserWarning, match="the prompt is empty"):  # gr.Warning: the page's pop-up
        out = handlers.generate("", 4, 0, *values(set()))
    assert out[-1].startswith("**Error:**") and "the prompt is empty" in out[-1]
    with pytest.warns(UserWarning, match="nothing to export"):
        out = handlers.export(*values(set()))
    assert "nothing to export" in out[-1]
    path, text, status = handlers.export(*values({("woman", "hspace")}))
    assert load_preset(path) == session.spec({("woman", "hspace"): 1.0}) and "woman" in text


def test_any_loadable_model_works_and_a_missing_classifier_is_a_note(user_dir, tmp_path):
    tiny = tmp_path / "tiny-sd1"
    tiny_sd_pipeline("sd1").save_pretrained(tiny)
    session = StudioSession(str(tiny), [user_dir], steps=2, classifier=str(tmp_path / "no-clip"))
    assert [e.key for e in session.available()] == [("elsewhere", "hspace")]
    assert any("her.hspace.safetensors" in p and "pictoworld" in p for p in session.problems())
    run = session.generate("a photo of a doctor", session.spec({("elsewhere", "hspace"): 1.0}), 2, 0)
    assert all(im is not None for im in run.baseline + run.steered)
    assert run.steered_shares == {} and any(n.startswith("no shares: ") for n in run.notes)
    assert shares_table(run).startswith("*No classified shares")


def test_cli_studio_refuses_a_model_it_cannot_load(tmp_path):
    result = CliRunner().invoke(app, ["studio", "--model", str(tmp_path / "missing")])
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # the terminal may wrap a long path
    assert "error:" in text and "not a bundled model" in text and "Traceback" not in text
