"""Chaos: an audit with three mitigations is SIGKILLed at eight random moments (generation,
classification, summary, report), loses one PNG and has another truncated, and meets a second
writer; the run it finally completes is byte-identical to one that was never disturbed."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
import torch

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.runs.store import LOCK_NAME, RunInUseError
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.noise import NoiseDirection
from diffsteer.steering.preset import SteeringSpec

BENCH = """\
name: tiny
axes: [gender]
images_per_prompt: 4
prompts:
  - text: a photo of a doctor
    group: profession
    subject: doctor
  - text: a photo of a nurse
    group: profession
    subject: nurse
"""
MITIGATIONS = ("none", "hspace-fair", "noise-fair")
PLANNED = 2 * 4 * len(MITIGATIONS)
# Children fork from a single-threaded server that imported diffsteer once: no 20 s start-up per run,
# and none of the locks a fork of this (threaded) test process could inherit half-held.
_FORK = multiprocessing.get_context("forkserver")
_FORK.set_forkserver_preload(["diffsteer.audit", "diffsteer.cli"])
_HANG_S = 240  # a child still running after this dumps its stack and exits, instead of hanging the suite


@pytest.fixture(scope="module")
def config(tiny_model_dirs, tmp_path_factory) -> AuditConfig:
    root = tmp_path_factory.mktemp("chaos")
    (root / "bench.yaml").write_text(BENCH)
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    gen = SteeredGenerator(pipe, steps=2)
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny-sd1", "block": gen.steered_block}
    torch.manual_seed(0)
    for sign, cls in ((1, "woman"), (-1, "man")):
        fair = {**meta, "axis": "gender", "class_name": cls}
        HSpaceVector(cls, sign * 3.0 * torch.randn(gen.hspace_shape), fair).save(root / "directions")
        d = torch.randn(gen.latent_shape)
        NoiseDirection(cls, d / d.norm(), {**meta, "axis": "gender", "recommended_weight": 4.0}).save(
            root / "directions"
        )
    return AuditConfig(
        model=str(tiny_model_dirs["sd1"]),
        benchmark=str(root / "bench.yaml"),
        classifier=str(tiny_model_dirs["clip"]),
        steps=2,
        mitigations=MITIGATIONS,
        steering=SteeringSpec(directions=(str(root / "directions"),)),
        batch_size=1,  # an image never depends on which other images share its batch
    )


def _audit_in_child(config: AuditConfig, out: Path) -> None:
    import faulthandler

    faulthandler.dump_traceback_later(_HANG_S, exit=True)
    torch.set_num_threads(1)
    try:
        run_audit(config, out, warn=lambda message: None)
    except BaseException:
        os._exit(3)
    os._exit(0)


def _start(config: AuditConfig, out: Path):
    proc = _FORK.Process(target=_audit_in_child, args=(config, out), daemon=True)
    proc.start()
    return proc


def _count(db: Path, table: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _kill_when(proc, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; False when it finished first."""
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            return True
        time.sleep(0.005)
    proc.join(timeout)
    return False


def _snapshot(out: Path) -> dict:
    """Everything a result depends on: PNG bytes, image rows (less the clock), labels, summary rows."""
    conn = sqlite3.connect(out / "results.sqlite")
    rows = conn.execute(
        "SELECT key, mitigation, prompt_id, prompt, final_prompt, seed, image_index, steering, model, "
        "status, drop_reason, truncated, png FROM images ORDER BY key"
    ).fetchall()
    labels = conn.execute("SELECT * FROM labels ORDER BY key, classifier, axis").fetchall()
    conn.close()
    pngs = {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}
    summary = json.loads((out / "summary.json").read_text())
    return {"rows": rows, "labels": labels, "pngs": pngs, "results": summary["results"]}


def test_killed_damaged_and_contended_run_ends_identical_to_an_undisturbed_one(config, tmp_path):
    reference = tmp_path / "reference"
    proc = _start(config, reference)
    proc.join(300)
    assert proc.exitcode == 0
    expected = _snapshot(reference)
    assert len(expected["rows"]) == PLANNED
    started = time.monotonic()
    proc = _start(config, reference)  # a rerun with nothing left to make: the length of the last stages
    proc.join(300)
    assert proc.exitcode == 0 and _snapshot(reference) == expected
    last_stages_s = time.monotonic() - started

    out = tmp_path / "chaos"
    db = out / "results.sqlite"
    rng = random.Random(23)
    # eight kills: three after a random number of further images, two at random points once every
    # image exists (classification, quality section), three at random times of a resumed run (by
    # then mostly the summary and the report)
    moments = [("generate", rng.randint(1, 6)) for _ in range(3)]
    moments += [("classify", rng.uniform(0.0, 0.5)) for _ in range(2)]
    moments += [("time", rng.uniform(0.1, 0.9) * last_stages_s) for _ in range(3)]
    killed_in = []
    for i, (stage, at) in enumerate(moments):
        before = _count(db, "images")
        proc = _start(config, out)
        t0 = time.monotonic()
        if stage == "generate":
            hit = _kill_when(proc, lambda at=at, before=before: _count(db, "images") >= before + at)
        elif stage == "classify":
            done: list[float] = []

            def classifying(at=at, done=done) -> bool:
                if not done and _count(db, "images") >= PLANNED:
                    done.append(time.monotonic())
                return bool(done) and time.monotonic() - done[0] >= at

            hit = _kill_when(proc, classifying)
        else:
            hit = _kill_when(proc, lambda at=at, t0=t0: time.monotonic() - t0 >= at)
        killed_in.append((stage, hit, _count(db, "images"), _count(db, "labels")))
        if i == 2:  # a PNG deleted by hand
            next((out / "images").glob("*.png")).unlink()
        if i == 4:  # a PNG cut short (a partial copy, a full disk)
            victim = sorted((out / "images").glob("*.png"))[-1]
            victim.write_bytes(victim.read_bytes()[:40])
    print("kills (stage, hit, images, labels):", killed_in)
    assert sum(hit for _, hit, _, _ in killed_in) >= 6, killed_in

    # a second writer while the first one holds the run: refused with the holder's PID, even with force
    first = _start(config, out)
    lock = out / LOCK_NAME
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not lock.exists() or lock.read_text().strip() != str(first.pid)):
        time.sleep(0.01)
    assert lock.read_text().strip() == str(first.pid), "the first writer never took the lock"
    assert first.is_alive(), "the first writer finished before the second could meet it"
    with pytest.raises(RunInUseError, match=f"PID {first.pid}"):
        run_audit(config, out)
    with pytest.raises(RunInUseError, match=f"PID {first.pid}"):
        run_audit(config, out, force=True)
    first.join(300)
    assert first.exitcode == 0

    final = _snapshot(out)
    assert final["rows"] == expected["rows"]
    # labels and their probabilities, byte for byte: the runner labels in fixed batches
    assert final["labels"] == expected["labels"]
    assert final["pngs"].keys() == expected["pngs"].keys()
    assert final["pngs"] == expected["pngs"]
    assert final["results"] == expected["results"]
    assert (out / "report.html").stat().st_size > 1000


def _cli_in_child(argv: list[str], stderr_path: Path) -> None:
    import faulthandler
    import sys

    from diffsteer import cli

    faulthandler.dump_traceback_later(_HANG_S, exit=True)
    torch.set_num_threads(1)
    with open(stderr_path, "w", encoding="utf-8") as err:
        sys.stderr = err
        sys.argv = ["diffsteer", *argv]
        try:
            cli.main()
        except SystemExit as exc:
            err.flush()
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        os._exit(0)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_says_how_to_resume(config, tmp_path, signum, status):
    out = tmp_path / "run"
    argv = ["audit", "--model", config.model, "--benchmark", config.benchmark, "--classifier",
            config.classifier, "--steps", "2", "--batch-size", "1", "--out", str(out)]  # fmt: skip
    stderr = tmp_path / "stderr.txt"
    proc = _FORK.Process(target=_cli_in_child, args=(argv, stderr), daemon=True)
    proc.start()
    deadline = time.monotonic() + 120
    while proc.is_alive() and time.monotonic() < deadline and _count(out / "results.sqlite", "images") < 2:
        time.sleep(0.005)
    assert proc.is_alive(), "the audit finished before it could be stopped"
    os.kill(proc.pid, signum)
    proc.join(60)
    assert proc.exitcode == status
    assert stderr.read_text().splitlines()[-1] == "interrupted: rerun the same command to resume"
    kept = _count(out / "results.sqlite", "images")
    assert 2 <= kept < 8
