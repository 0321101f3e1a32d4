"""Executors: the local one streams batches; the Ray one makes the same run byte for byte."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.generate import ImageRequest
from diffsteer.runs.executors import GeneratorSpec, batch_from_memory
from diffsteer.runs.executors.local import LocalExecutor
from diffsteer.runs.executors.spec import compile_unet

runner = CliRunner()


@pytest.fixture()
def bench_file(write_benchmark):
    return write_benchmark(images_per_prompt=5)


def _store_content(run_dir):
    """Every image row (without its timestamp) and the bytes of every PNG, by name."""
    con = sqlite3.connect(run_dir / "results.sqlite")
    rows = sorted(
        con.execute(
            "SELECT key, mitigation, prompt_id, final_prompt, seed, image_index, steering, model, status, "
            "drop_reason, truncated, png FROM images"
        )
    )
    labels = sorted(con.execute("SELECT key, axis, label, probs FROM labels"))
    con.close()
    pngs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "images").glob("*.png")}
    return rows, labels, pngs


def test_local_executor_streams_each_batch_to_the_sink(tiny_model_dirs):
    generator = GeneratorSpec(model=str(tiny_model_dirs["sd1"]), steps=2, batch_size=4).build()
    made = []
    original = generator.generate

    def counting(requests, **kw):
        made.append(len(requests))
        return original(requests, **kw)

    generator.generate = counting
    seen = []

    def sink(finished):
        # the sink sees a batch as soon as it exists, before the next one is made
        seen.append((len(made), [record for record, _ in finished]))
        assert all(out.image is not None for _, out in finished)

    jobs = [(f"job{i}", ImageRequest(prompt="a photo of a doctor", seed=i)) for i in range(10)]
    LocalExecutor(generator).run(jobs, sink)
    assert made == [4, 4, 2]
    assert [n for n, _ in seen] == [1, 2, 3]
    assert [r for _, batch in seen for r in batch] == [f"job{i}" for i in range(10)]


def test_ray_executor_matches_local_byte_for_byte(bench_file, tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'diffsteer[ray]'")
    # The bundled model, not a tiny random one: its PNGs change with the CPU thread count (the tiny
    # model's do not), so a worker running with other threads than the driver would fail this test.
    common = dict(benchmark=str(bench_file), steps=4, mitigations=("none", "intervention"), batch_size=4)
    local = run_audit(AuditConfig(**common), tmp_path / "local")
    assert local.generated == 20
    # A local Ray of two one-thread workers, started here, never an outside cluster. The test process
    # uses one torch thread (conftest); the workers take the driver's thread count, as documented.
    assert torch.get_num_threads() == 1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = runner.invoke(
            app,
            [
                "audit",
                "--benchmark", common["benchmark"],
                "--steps", "4",
                "--mitigation", "none",
                "--mitigation", "intervention",
                "--batch-size", "4",
                "--executor", "ray",
                "--out", str(tmp_path / "ray"),
            ],
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    local_content = _store_content(tmp_path / "local")
    ray_content = _store_content(tmp_path / "ray")
    assert len(local_content[0]) == 20 and len(local_content[2]) > 1
    assert ray_content == local_content  # same rows, same labels, same PNG bytes
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "ray")]
    assert summaries[0]["results"] == summaries[1]["results"]


def test_unknown_executor_is_one_line_error(tiny_model_dirs, bench_file, tmp_path):
    result = runner.invoke(
        app,
        ["audit", "--model", str(tiny_model_dirs["sd1"]), "--benchmark", str(bench_file),
         "--executor", "slurm", "--out", str(tmp_path / "run")],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown executor 'slurm'" in result.output and "Traceback" not in result.output


def test_automatic_batch_size_rule():
    gib = 1 << 30
    # floor((0.8 * free - fixed) / per_image), at least 1, at most 64
    assert batch_from_memory(10 * gib, 1 * gib, 2 * gib) == 6
    assert batch_from_memory(70 * gib, 0.25 * gib) == 64
    assert batch_from_memory(1 * gib, 4 * gib) == 1
    assert GeneratorSpec(model="unused").batch_size is None  # None means automatic: 16 on a CPU


def test_compiled_unet_keeps_steering_and_images(tiny_model_dirs):
    spec = GeneratorSpec(model=str(tiny_model_dirs["sd1"]), steps=2, batch_size=2)
    plain = spec.build()
    compiled = spec.build()
    assert plain.batch_size == 2
    # the "eager" backend traces with dynamo exactly as inductor would, without a C++ build
    compile_unet(compiled.pipe.unet, compiled.steered_block, backend="eager")
    hspace = torch.full(compiled.hspace_shape, 3.0)
    requests = [
        ImageRequest(prompt="a photo of a doctor", seed=0),
        ImageRequest(prompt="a photo of a doctor", seed=0, hspace=hspace),
    ]
    want = [torch.tensor(list(o.image.getdata())) for o in plain.generate(requests)]
    got = [torch.tensor(list(o.image.getdata())) for o in compiled.generate(requests)]
    assert not torch.equal(got[0], got[1])  # steering still reaches the compiled U-Net
    for a, b in zip(want, got, strict=True):
        assert (a - b).abs().max() <= 1


def test_learn_noise_on_ray_makes_the_same_images_and_direction(tiny_model_dirs, tmp_path):
    """Every long job runs on the shared runner, so `--executor ray` works for learning too."""
    ray = pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'diffsteer[ray]'")
    from diffsteer.steering.noise import load_noise_direction

    args = [
        "learn", "noise", "--classes", "woman=a photo of a woman", "--classes", "man=a photo of a man",
        "--images", "4", "--steps", "2", "--record-steps", "0,1", "--axis", "gender", "--weight", "4",
        "--model", str(tiny_model_dirs["sd1"]),
    ]  # fmt: skip
    local = runner.invoke(app, [*args, "--out", str(tmp_path / "local"), "--work-dir", str(tmp_path / "wl")])
    assert local.exit_code == 0, local.output
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = runner.invoke(
            app,
            [*args, "--executor", "ray", "--out", str(tmp_path / "ray"), "--work-dir", str(tmp_path / "wr")],
        )
    finally:
        ray.shutdown()
    assert remote.exit_code == 0, remote.output
    assert _store_content(tmp_path / "wl") == _store_content(tmp_path / "wr")  # same rows, same PNG bytes
    for name in ("woman", "man"):
        a = load_noise_direction(tmp_path / "local" / f"{name}.noise.safetensors")
        b = load_noise_direction(tmp_path / "ray" / f"{name}.noise.safetensors")
        assert torch.equal(a.direction, b.direction)
