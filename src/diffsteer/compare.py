"""Compare two audit runs and decide whether bias got worse: a release gate for CI.

Rows are matched by (mitigation, axis, prompt) between the two runs' summary.json files; each
compares the deviation ratio and the ENTIGEN bias of run B with run A (B - A; positive = more bias).

The rule, chosen to be statistically honest with small audits: a metric **regressed** when the lower
end of the 95% bootstrap interval of its difference B - A is above ``max_increase``. The interval
comes from redrawing each run's images independently (stratified multinomial bootstrap of each
prompt's class counts, as for the audit's own intervals, 2,000 draws), so a regression means "with
about 97.5% confidence the metric rose by more than max_increase", not merely "the point estimate
rose". A small audit whose difference could be noise never fails the gate; a large audit with a
clear increase does. Comparing intervals of A and B separately for overlap would be needlessly
conservative and ignores that both are estimates.

Only the aggregate rows (prompt null: the mean deviation ratio and the ENTIGEN bias over the
prompts the two runs share) gate the exit status: with hundreds of prompts, some per-prompt
intervals would exclude the threshold by chance alone. Per-prompt rows are still computed and
flagged for reading.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffsteer.metrics import entigen_bias, mean_deviation_ratio, resample_counts

__all__ = ["DEFAULT_MAX_INCREASE", "Comparison", "MetricChange", "compare_runs", "load_summary"]

DEFAULT_MAX_INCREASE = 0.05
METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "deviation_ratio": mean_deviation_ratio,
    "entigen_bias": entigen_bias,
}
_IDENTITY_KEYS_SHOWN = ("model", "benchmark", "classifier", "images_per_prompt", "steps", "guidance", "seed")


@dataclass
class MetricChange:
    """One metric of one (mitigation, axis, prompt) row in both runs; prompt None is the aggregate."""

    mitigation: str
    axis: str
    prompt: str | None
    metric: str
    a: float | None
    b: float | None
    diff: float | None
    diff_ci95: tuple[float, float] | None
    n_a: int
    n_b: int
    regressed: bool  # lower end of diff_ci95 above max_increase
    gates: bool  # whether this row decides the exit status (aggregate rows)


@dataclass
class Comparison:
    run_a: str
    run_b: str
    max_increase: float
    changes: list[MetricChange]
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricChange]:
        """Gating rows whose metric got worse by more than ``max_increase`` beyond its interval."""
        return [c for c in self.changes if c.gates and c.regressed]

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def to_dict(self) -> dict:
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "max_increase": self.max_increase,
            "failed": self.failed,
            "notes": self.notes,
            "changes": [
                c.__dict__ | {"diff_ci95": list(c.diff_ci95) if c.diff_ci95 else None} for c in self.changes
            ],
        }


def load_summary(run: Path | str) -> dict:
    """summary.json of a run folder (or the file itself)."""
    path = Path(run)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no summary.json at {path}: is {run} a finished diffsteer run?")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("results"), list):
        raise ValueError(f"{path} has no 'results' list; is it a diffsteer summary?")
    return summary


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _difference(
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    metric: Callable[[np.ndarray], np.ndarray],
    n_boot: int,
    seed: int,
) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """Point values of A and B and the 95% bootstrap interval of B - A (runs redrawn independently)."""
    a = _finite(float(metric(counts_a)))
    b = _finite(float(metric(counts_b)))
    if a is None or b is None:
        return a, b, None
    diffs = metric(resample_counts(counts_b, n_boot, seed=seed + 1)) - metric(
        resample_counts(counts_a, n_boot, seed=seed)
    )
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return a, b, None
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return a, b, (float(lo), float(hi))


def _config_notes(a: dict, b: dict) -> list[str]:
    cfg_a, cfg_b = a.get("config", {}), b.get("config", {})
    differing = [k for k in _IDENTITY_KEYS_SHOWN if cfg_a.get(k) != cfg_b.get(k)]
    notes = []
    if differing:
        notes.append(
            "the runs differ in "
            + ", ".join(f"{k} ({cfg_a.get(k)!r} -> {cfg_b.get(k)!r})" for k in differing)
        )
    if "images_per_prompt" in differing:
        notes.append("different images per prompt: small-sample bias of the metrics differs between the runs")
    return notes


def compare_runs(
    run_a: Path | str,
    run_b: Path | str,
    *,
    max_increase: float = DEFAULT_MAX_INCREASE,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare run B against run A (see the module docstring for the rule)."""
    if not math.isfinite(max_increase) or max_increase < 0:
        raise ValueError(f"--max-increase must be a non-negative number, got {max_increase}")
    sa, sb = load_summary(run_a), load_summary(run_b)
    comparison = Comparison(str(run_a), str(run_b), max_increase, [], _config_notes(sa, sb))
    rows_b = {(r["mitigation"], r["axis"], r["prompt"]): r for r in sb["results"]}
    groups = list(dict.fromkeys((r["mitigation"], r["axis"]) for r in sa["results"]))
    for mitigation, axis in groups:
        prompt_rows = [
            (r, rows_b.get((mitigation, axis, r["prompt"])))
            for r in sa["results"]
            if r["mitigation"] == mitigation and r["axis"] == axis and r["prompt"] is not None
        ]
        common = [(ra, rb) for ra, rb in prompt_rows if rb is not None]
        if not common:
            continue
        classes = list(common[0][0]["counts"])
        if any(list(rb["counts"]) != classes for _, rb in common):
            comparison.notes.append(f"{mitigation}/{axis}: the runs label different classes; not compared")
            continue
        only_a = len(prompt_rows) - len(common)
        only_b = sum(1 for (m, ax, p) in rows_b if m == mitigation and ax == axis and p is not None) - len(
            common
        )
        if only_a or only_b:
            comparison.notes.append(
                f"{mitigation}/{axis}: compared on the {len(common)} prompts both runs have "
                f"({only_a} only in A, {only_b} only in B)"
            )
        matrix_a = np.array([[ra["counts"][c] for c in classes] for ra, _ in common], dtype=np.int64)
        matrix_b = np.array([[rb["counts"][c] for c in classes] for _, rb in common], dtype=np.int64)
        blocks = [(None, matrix_a, matrix_b)] + [
            (ra["prompt"], matrix_a[i : i + 1], matrix_b[i : i + 1]) for i, (ra, _) in enumerate(common)
        ]
        for prompt, ca, cb in blocks:
            for metric, fn in METRICS.items():
                a, b, ci = _difference(ca, cb, fn, n_boot, seed)
                comparison.changes.append(
                    MetricChange(
                        mitigation=mitigation,
                        axis=axis,
                        prompt=prompt,
                        metric=metric,
                        a=a,
                        b=b,
                        diff=None if a is None or b is None else b - a,
                        diff_ci95=ci,
                        n_a=int(ca.sum()),
                        n_b=int(cb.sum()),
                        regressed=ci is not None and ci[0] > max_increase,
                        gates=prompt is None,
                    )
                )
    if not comparison.changes:
        raise ValueError(f"{run_a} and {run_b} have no (mitigation, axis, prompt) in common to compare")
    return comparison
