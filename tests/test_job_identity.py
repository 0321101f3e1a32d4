"""Job identity: two mitigations that steer alike, or two prompt ids with one text, each get their
own images (a shared job key once left the second one with none, silently)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from diffsteer.cli import app
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.runs.store import RunStore
from diffsteer.steering.hspace import HSpaceVector

runner = CliRunner()

BENCH = """\
name: tiny
axes: [gender]
images_per_prompt: 2
prompts:
  - text: a photo of a doctor
    group: profession
    subject: doctor
"""


@pytest.fixture(scope="module")
def directions(tiny_model_dirs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vectors")
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    gen = SteeredGenerator(pipe, steps=1)
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny-sd1", "block": gen.steered_block}
    torch.manual_seed(0)
    for cls in ("woman", "man"):
        fair = {**meta, "axis": "gender", "class_name": cls}
        HSpaceVector(cls, torch.randn(gen.hspace_shape), fair).save(folder)
    HSpaceVector("anti-violence", torch.randn(gen.hspace_shape), meta).save(folder)
    return folder


def _audit(tiny_model_dirs, bench, out, *args):
    result = runner.invoke(
        app,
        ["audit", "--model", str(tiny_model_dirs["sd1"]), "--benchmark", str(bench),
         "--classifier", str(tiny_model_dirs["clip"]), "--steps", "1", "--out", str(out), *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with RunStore.open_existing(out) as store:
        records = store.images()
    by_mitigation: dict[str, int] = {}
    for r in records:
        by_mitigation[r.mitigation] = by_mitigation.get(r.mitigation, 0) + 1
    return by_mitigation, records


@pytest.mark.parametrize(
    "args, mitigations",
    [
        (
            ["--mitigation", "none", "--mitigation", "hspace-safe", "--safe"],
            {"none", "hspace-safe", "steered"},
        ),
        (["--mitigation", "hspace-fair", "--fair", "gender"], {"hspace-fair", "steered"}),
    ],
    ids=["safe-twice", "fair-twice"],
)
def test_mitigations_that_steer_alike_each_get_their_images(
    tiny_model_dirs, directions, tmp_path, args, mitigations
):
    bench = tmp_path / "bench.yaml"
    bench.write_text(BENCH)
    counts, records = _audit(tiny_model_dirs, bench, tmp_path / "run", *args, "--directions", str(directions))
    assert counts == dict.fromkeys(mitigations, 2)
    alike = [r for r in records if r.mitigation != "none"]
    assert len({r.png for r in alike}) == 2  # the same steering makes the same images, stored once
    assert len({r.key for r in alike}) == len(alike)


def test_a_benchmark_with_one_text_under_two_ids_keeps_both(tiny_model_dirs, tmp_path):
    bench = tmp_path / "bench.yaml"
    bench.write_text(BENCH + "  - text: a photo of a doctor\n    id: doctor-again\n    group: profession\n")
    counts, records = _audit(tiny_model_dirs, bench, tmp_path / "run")
    assert counts == {"none": 4}
    assert len({r.prompt_id for r in records}) == 2
