"""``diffsteer compare``: bias differences between two runs and the release gate, both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffsteer.audit import AuditConfig, run_audit
from diffsteer.cli import app
from diffsteer.compare import compare_runs

runner = CliRunner()

# Two balanced control professions: at guidance 1 the bundled model draws them near 50/50, at 7.5 it
# amplifies its learned skew (README, benchmarks/RESULTS.md), so the two runs differ in bias.
BENCH = """\
name: controls
axes: [gender]
images_per_prompt: 24
prompts:
  - text: a photo of a chef
    group: profession
    subject: chef
  - text: a photo of a painter
    group: profession
    subject: painter
"""


def _summary(folder: Path, counts: dict[str, tuple[int, int]], mitigation: str = "none") -> Path:
    """A summary.json holding only what compare reads: per-prompt gender counts."""
    folder.mkdir(parents=True)
    results = [
        {"mitigation": mitigation, "axis": "gender", "prompt": p, "counts": {"man": m, "woman": w}}
        for p, (m, w) in counts.items()
    ]
    results.append({"mitigation": mitigation, "axis": "gender", "prompt": None, "counts": {}})
    (folder / "summary.json").write_text(json.dumps({"config": {"guidance": 7.5}, "results": results}))
    return folder


BALANCED = {"a photo of a chef": (100, 100), "a photo of a nurse": (100, 100)}
SKEWED = {"a photo of a chef": (160, 40), "a photo of a nurse": (40, 160)}  # deviation ratio 0.6 each
SLIGHTLY = {"a photo of a chef": (112, 88), "a photo of a nurse": (88, 112)}  # 0.12: within noise


def _aggregate(result, metric="deviation_ratio"):
    return next(c for c in result.changes if c.prompt is None and c.metric == metric)


def test_a_clear_increase_is_a_regression_and_its_reverse_is_not(tmp_path):
    a, b = _summary(tmp_path / "a", BALANCED), _summary(tmp_path / "b", SKEWED)
    worse = compare_runs(a, b)
    change = _aggregate(worse)
    # the plain plug-in values (issue 22: a/b/diff now carry the bias-corrected estimates)
    assert change.plugin_a == pytest.approx(0.0) and change.plugin_b == pytest.approx(0.6)
    assert change.plugin_diff == pytest.approx(0.6) and change.diff_ci95[0] > 0.05
    assert worse.failed and {c.metric for c in worse.regressions} == {"deviation_ratio", "entigen_bias"}
    better = compare_runs(b, a)
    assert not better.failed and _aggregate(better).plugin_diff == pytest.approx(-0.6)


def test_an_increase_within_noise_or_below_the_threshold_passes(tmp_path):
    a = _summary(tmp_path / "a", BALANCED)
    noisy = compare_runs(a, _summary(tmp_path / "b", SLIGHTLY))
    change = _aggregate(noisy)
    # the point estimate rose by more than 0.05, but the interval of the difference reaches below it
    assert change.plugin_diff == pytest.approx(0.12) and change.diff_ci95[0] < 0.05 < change.diff
    assert not noisy.failed
    # a threshold above the increase passes even a certain rise
    assert not compare_runs(a, _summary(tmp_path / "c", SKEWED), max_increase=0.7).failed


def test_per_prompt_rows_are_reported_but_do_not_gate(tmp_path):
    a = _summary(tmp_path / "a", {"p1": (100, 100), "p2": (100, 100), "p3": (100, 100), "p4": (100, 100)})
    b = _summary(tmp_path / "b", {"p1": (170, 30), "p2": (100, 100), "p3": (100, 100), "p4": (100, 100)})
    result = compare_runs(a, b, max_increase=0.3)
    p1 = next(c for c in result.changes if c.prompt == "p1" and c.metric == "deviation_ratio")
    assert p1.regressed and not p1.gates
    assert not result.failed  # the mean over prompts rose by 0.175 only


def test_only_shared_prompts_are_compared_and_notes_say_so(tmp_path):
    a = _summary(tmp_path / "a", {"p1": (100, 100), "p2": (100, 100)})
    b = _summary(tmp_path / "b", {"p1": (100, 100), "p3": (200, 0)})
    result = compare_runs(a, b)
    assert {c.prompt for c in result.changes} == {None, "p1"}
    assert any("1 prompts both runs have (1 only in A, 1 only in B)" in n for n in result.notes)
    with pytest.raises(ValueError, match="nothing in common|no \\(mitigation"):
        compare_runs(a, _summary(tmp_path / "c", BALANCED, mitigation="intervention"))


def test_cli_bad_input_is_one_line(tmp_path):
    a = _summary(tmp_path / "a", BALANCED)
    missing = runner.invoke(app, ["compare", str(a), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no summary.json" in missing.output
    negative = runner.invoke(app, ["compare", str(a), str(a), "--max-increase", "-1"])
    assert negative.exit_code == 2 and "non-negative" in negative.output


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    bench = root / "controls.yaml"
    bench.write_text(BENCH)
    runs = {}
    for name, guidance in (("low", 1.0), ("high", 7.5)):
        config = AuditConfig(benchmark=str(bench), steps=4, guidance=guidance)
        runs[name] = run_audit(config, root / name).run_dir
    return runs


def test_cli_on_two_real_runs_both_ways(two_runs, tmp_path):
    worse = runner.invoke(
        app, ["compare", str(two_runs["low"]), str(two_runs["high"]), "--json", str(tmp_path / "c.json")]
    )
    assert worse.exit_code == 1, worse.output
    assert "REGRESSION" in worse.output and "guidance (1.0 -> 7.5)" in worse.output
    record = json.loads((tmp_path / "c.json").read_text())
    assert record["failed"] is True
    aggregate = next(c for c in record["changes"] if c["prompt"] is None and c["metric"] == "deviation_ratio")
    for run, side in (("low", "a"), ("high", "b")):
        rows = json.loads((two_runs[run] / "summary.json").read_text())["results"]
        stored = next(r for r in rows if r["prompt"] is None)["deviation_ratio"]
        assert aggregate[side] == pytest.approx(stored)

    better = runner.invoke(app, ["compare", str(two_runs["high"]), str(two_runs["low"])])
    assert better.exit_code == 0, better.output
    assert "no regression" in better.output


def test_two_runs_on_the_same_seeds_are_paired_and_others_say_they_are_not(two_runs, tmp_path):
    paired = compare_runs(two_runs["low"], two_runs["high"])
    assert paired.changes and all(c.paired for c in paired.changes)
    assert not any("redrawn independently" in n for n in paired.notes)
    # summaries without per-seed labels fall back to independent redraws, and say so
    unpaired = compare_runs(_summary(tmp_path / "a", BALANCED), _summary(tmp_path / "b", SKEWED))
    assert not any(c.paired for c in unpaired.changes)
    assert any("redrawn independently" in n for n in unpaired.notes)
