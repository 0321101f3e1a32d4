"""End-to-end audits on tiny models built from config: results, resumption, refusal, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.runs.store import RunConfigMismatch

ROW_KEYS = {
    "mitigation",
    "axis",
    "prompt",
    "counts",
    "n_dropped",
    "entigen_bias",
    "deviation_ratio",
    "deviation_ratio_ci95",
}


@pytest.fixture()
def bench_file(write_benchmark):
    return write_benchmark(images_per_prompt=3)


def _config(dirs, bench_file, kind="sd1", **kw):
    base = dict(
        model=str(dirs[kind]),
        benchmark=str(bench_file),
        classifier=str(dirs["clip"]),
        steps=2,
        mitigations=("none", "intervention"),
        batch_size=4,
    )
    base.update(kw)
    return AuditConfig(**base)


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_audit_writes_summary_and_report(tiny_model_dirs, bench_file, tmp_path, kind):
    out = tmp_path / "run"
    result = run_audit(_config(tiny_model_dirs, bench_file, kind), out)
    summary = json.loads((out / "summary.json").read_text())
    assert result.summary.to_json() == (out / "summary.json").read_text()  # the typed summary is the file
    assert (out / "report.html").stat().st_size > 1000
    assert result.generated == 2 * 2 * 3
    rows = summary["results"]
    assert all(set(r) == ROW_KEYS for r in rows)
    # one row per (mitigation, prompt) plus one aggregate row per mitigation, for the one axis
    assert len(rows) == 2 * (2 + 1)
    details = {(d["mitigation"], d["prompt"]): d for d in summary["details"]}
    for r in rows:
        if r["prompt"] is not None:
            counted = (
                sum(r["counts"].values())
                + r["n_dropped"]
                + details[(r["mitigation"], r["prompt"])]["n_uncertain"]
            )
            assert counted == 3  # every planned image is accounted for: counted, uncertain or dropped
    prompts = {r["prompt"] for r in rows if r["mitigation"] == "intervention" and r["prompt"]}
    assert prompts == {"a photo of a doctor", "a photo of a nurse"}
    finals = {
        row[0] for row in sqlite3.connect(out / "results.sqlite").execute("SELECT final_prompt FROM images")
    }
    assert "a photo of a doctor if all individuals can be a doctor irrespective of their gender" in finals


def test_rerun_resumes_and_other_config_is_refused(tiny_model_dirs, bench_file, tmp_path):
    out = tmp_path / "run"
    cfg = _config(tiny_model_dirs, bench_file, mitigations=("none",))
    assert run_audit(cfg, out).generated == 6
    again = run_audit(cfg, out)
    assert again.generated == 0 and again.classified == 0
    other = _config(tiny_model_dirs, bench_file, mitigations=("none",), guidance=3.0)
    with pytest.raises(RunConfigMismatch, match="guidance"):
        run_audit(other, out)
    # --resume keeps matching work; a changed guidance changes every image, so all are made anew
    assert run_audit(other, out, resume=True).generated == 6
    assert run_audit(other, out, force=True).generated == 6


def test_retrained_weights_are_not_mistaken_for_finished_images(tiny_model_dirs, bench_file, tmp_path):
    """Same folder, same architecture, new weights (a fine-tune saved in place): nothing is reused."""
    import shutil

    import torch
    from diffusers import UNet2DConditionModel

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dirs["sd1"], model)
    out = tmp_path / "run"
    cfg = _config(tiny_model_dirs, bench_file, model=str(model), mitigations=("none",))
    assert run_audit(cfg, out).generated == 6
    unet = UNet2DConditionModel.from_pretrained(model / "unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.01)
    unet.save_pretrained(model / "unet")
    assert run_audit(cfg, out).generated == 6


def test_paired_seeds_across_mitigations(tiny_model_dirs, bench_file, tmp_path):
    out = tmp_path / "run"
    run_audit(_config(tiny_model_dirs, bench_file), out)
    con = sqlite3.connect(out / "results.sqlite")
    seeds = {}
    for mitigation, prompt_id, k, seed in con.execute(
        "SELECT mitigation, prompt_id, image_index, seed FROM images"
    ):
        seeds.setdefault((prompt_id, k), {})[mitigation] = seed
    assert all(s["none"] == s["intervention"] == k for (_, k), s in seeds.items())


runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no/such-model-xyz"], "no/such-model-xyz"),
        (["--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["--axes", "age"], "unknown axis 'age'"),
        (["--mitigation", "magic"], "unknown mitigation 'magic'"),
        (["--images-per-prompt", "0"], "at least 1"),
        (["--hspace-branches", "all"], "unknown --hspace-branches 'all'"),
    ],
)
def test_cli_bad_input_is_one_line(tiny_model_dirs, bench_file, tmp_path, monkeypatch, args, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = [
        "audit",
        "--model",
        str(tiny_model_dirs["sd1"]),
        "--benchmark",
        str(bench_file),
        "--classifier",
        str(tiny_model_dirs["clip"]),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "r"),
    ]
    result = runner.invoke(app, base + args)
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert any(message in ln and ln.startswith("error:") for ln in lines), result.output
    assert "Traceback" not in result.output


def test_cli_malformed_yaml_names_line(tiny_model_dirs, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts:\n  - text: ''\n")
    result = runner.invoke(
        app,
        [
            "audit",
            "--model",
            str(tiny_model_dirs["sd1"]),
            "--benchmark",
            str(bad),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "bad.yaml:2" in result.output and "text" in result.output


def test_cli_refuses_out_with_other_run(tiny_model_dirs, bench_file, tmp_path):
    out = tmp_path / "run"
    common = [
        "audit",
        "--model",
        str(tiny_model_dirs["sd1"]),
        "--benchmark",
        str(bench_file),
        "--classifier",
        str(tiny_model_dirs["clip"]),
        "--steps",
        "1",
        "--images-per-prompt",
        "1",
        "--out",
        str(out),
    ]
    assert runner.invoke(app, common).exit_code == 0
    refused = runner.invoke(app, [*common, "--guidance", "2"])
    assert refused.exit_code == 2 and "--resume" in refused.output and "--force" in refused.output
    assert runner.invoke(app, [*common, "--guidance", "2", "--force"]).exit_code == 0


def test_long_prompt_is_recorded_as_truncated(tiny_model_dirs, tmp_path):
    bench = tmp_path / "long.yaml"
    bench.write_text("prompts:\n  - " + " ".join(["a photo of a doctor"] * 12) + "\nimages_per_prompt: 1\n")
    warnings = []
    run_audit(
        AuditConfig(
            model=str(tiny_model_dirs["sd1"]),
            benchmark=str(bench),
            classifier=str(tiny_model_dirs["clip"]),
            steps=1,
        ),
        tmp_path / "run",
        warn=warnings.append,
    )
    assert any("truncated" in w for w in warnings)
    (truncated,) = (
        sqlite3.connect(tmp_path / "run" / "results.sqlite")
        .execute("SELECT truncated FROM images")
        .fetchone()
    )
    assert truncated == 1


def test_sigkill_mid_audit_then_rerun_has_exactly_the_planned_images(
    tiny_model_dirs, write_benchmark, tmp_path
):
    bench = write_benchmark(images_per_prompt=20)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "diffsteer.cli",
        "audit",
        "--model",
        str(tiny_model_dirs["sd1"]),
        "--benchmark",
        str(bench),
        "--classifier",
        str(tiny_model_dirs["clip"]),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    db = out / "results.sqlite"
    deadline = time.time() + 600
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                rows = (
                    sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                    .execute("SELECT COUNT(*) FROM images")
                    .fetchone()[0]
                )
            except sqlite3.OperationalError:
                rows = 0
            if rows >= 6:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the audit finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < rows < 40
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    con = sqlite3.connect(db)
    keys = [k for (k,) in con.execute("SELECT key FROM images")]
    assert len(keys) == 40 and len(set(keys)) == 40
    from PIL import Image

    for (png,) in con.execute("SELECT png FROM images"):
        with Image.open(out / "images" / png) as img:
            img.load()


def test_cli_export_parquet_and_csv(tiny_model_dirs, bench_file, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "run"
    run_audit(_config(tiny_model_dirs, bench_file, mitigations=("none",)), out)
    for name in ("rows.parquet", "rows.csv"):
        result = runner.invoke(app, ["export", str(out), str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.num_rows == 6 and "gender" in table.column_names
    missing = runner.invoke(app, ["export", str(tmp_path / "nothing"), str(tmp_path / "x.csv")])
    assert missing.exit_code == 2 and "no diffsteer run" in missing.output
