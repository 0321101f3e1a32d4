"""tools/train_pictoworld_seeds.py: which seeds it stops to meet its deadline, how it ranks the gated ones,
and that bad arguments stop it in one line before anything trains."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "train_pictoworld_seeds.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("train_pictoworld_seeds", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves its annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_seeds_are_read_as_ranges_and_lists(tool):
    assert tool.parse_seeds("2-5") == [2, 3, 4, 5]
    assert tool.parse_seeds("2,7,9-10") == [2, 7, 9, 10]
    for bad in ("", "a-b", "3,3", "-1"):
        with pytest.raises(ValueError, match="--seeds"):
            tool.parse_seeds(bad)


def test_nothing_is_stopped_when_the_shared_pace_finishes_every_seed_in_time(tool):
    # four seeds at 10 steps a second each: 40 a second for 4 x 1000 steps left = 100 s
    paces = [tool.Pace(seed, 9000, 10_000, 10.0) for seed in range(4)]
    assert tool.seeds_to_stop(paces, seconds_left=120) == []


def test_the_least_advanced_seeds_are_stopped_until_the_rest_fit(tool):
    paces = [tool.Pace(seed, done, 10_000, 10.0) for seed, done in ((0, 8000), (1, 6000), (2, 4000))]
    # 12,000 steps left at 30 a second is 400 s; without seed 2, 6,000 at 30 is 200 s
    assert tool.seeds_to_stop(paces, seconds_left=250) == [2]
    # without seed 1 as well, 2,000 at 30 is 67 s
    assert tool.seeds_to_stop(paces, seconds_left=100) == [2, 1]
    # one seed is always kept, however late
    assert tool.seeds_to_stop(paces, seconds_left=1) == [2, 1]


def test_candidates_rank_by_gate_misses_then_spread_and_unreadable_ones_last(tool):
    gates = {
        2: {"misses": ["a"], "spread": 0.01},
        3: {"misses": [], "spread": 0.04},
        4: {"misses": [], "spread": 0.02},
        5: {"misses": [], "spread": None},
    }
    assert tool.rank(gates) == [4, 3, 5, 2]


def test_as_many_of_the_best_are_packed_as_the_device_tool_brings_back(tool):
    mb = 1_000_000
    # 7 MB candidates: two a tar, eight in four tars (56 MB of the 60 allowed)
    assert tool.pack_groups({seed: 7 * mb for seed in range(2, 10)}) == [[2, 3], [4, 5], [6, 7], [8, 9]]
    # 11 MB candidates (a wider U-Net): one a tar, and the sixth would pass 60 MB in all
    assert tool.pack_groups({seed: 11 * mb for seed in range(8)}) == [[0], [1], [2], [3], [4]]
    # a candidate that does not fit ends the list: a worse one never takes a better one's place
    assert tool.pack_groups({0: 7 * mb, 1: 20 * mb, 2: 1 * mb}) == [[0]]


@pytest.mark.parametrize(
    "extra",
    [
        ["--seeds", "x"],
        ["--seeds", "2", "--device", "cuda:99"],
        ["--seeds", "2", "--device", "cpu", "--contrast-rate", "0.5"],
        ["--seeds", "2", "--device", "cpu", "--vae-from", "no/such/candidate"],
    ],
)
def test_bad_seeds_device_rate_or_vae_fail_in_one_line_before_any_training(tmp_path, extra):
    out = tmp_path / "sweep"
    result = subprocess.run([sys.executable, str(TOOL), str(out), *extra], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_every_seed_of_a_sweep_trains_on_the_vae_it_is_given(tool, tmp_path, monkeypatch):
    import argparse
    import json
    import time

    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from diffsteer.cli import app

    small = ["--preset", "smoke", "--unet-steps", "1", "--n-images", "64"]
    donor = tmp_path / "donor"
    result = CliRunner().invoke(app, ["pictoworld", "train", *small, "--seed", "1", "--out", str(donor)])
    assert result.exit_code == 0, result.output
    args = argparse.Namespace(
        seeds=[0], device="cpu", preset="smoke", n_images=64, unet_steps=1, unet_channels=None,
        contrast_rate=None, vae_from=donor, out=tmp_path / "sweep", started=time.time(),
        deadline_s=600, reserve_s=0, poll_s=1,
    )  # fmt: skip
    monkeypatch.syspath_prepend(str(TOOL.parent))  # the spawned trainer imports the tool by its name
    assert tool.train_seeds(args, log=lambda line: None) == [0]
    run = tmp_path / "sweep" / "0"
    assert json.loads((run / "training_record.json").read_text())["vae_from"] == str(donor)
    vae = "pipeline/vae/diffusion_pytorch_model.safetensors"
    assert load_file(run / vae).keys() == load_file(donor / vae).keys()
    assert all((load_file(run / vae)[k] == w).all() for k, w in load_file(donor / vae).items())
