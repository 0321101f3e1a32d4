"""Compare two audit runs and decide whether bias got worse: a release gate for CI.

Rows are matched by (mitigation, axis, prompt) between the two runs' summary.json files; each
compares the deviation ratio and the ENTIGEN bias of run B with run A (B - A; positive = more bias).

The rule, chosen to be statistically honest with small audits: a metric **regressed** when the lower
end of the 95% interval of its difference B - A is above ``max_increase``. A small audit whose
difference could be noise never fails the gate; a large audit with a clear increase does.

The deviation ratio's difference is that of the two runs' bias-corrected estimates (summary.json's
``deviation_ratio``), with the interval of :func:`diffsteer.metrics.mean_difference_interval`: a
normal interval of the difference of the two mean plug-ins, its spread from exact binomial counts at
the runs' estimated shares tied by the correlations their 2,000 redraws show, minus the bounds of each
run's small-sample bias (docs/intervals.md). **Paired when the seeds match**: two runs of the same
seeds share each image's starting noise, so one redraw picks seed indices once and takes both runs'
images of those seeds, and the noise the seeds add to both cancels; the interval is narrower than
redrawing the runs apart. Only when the runs' seeds differ (or a summary predates per-seed labels)
are the runs redrawn independently, and a note says so. The ENTIGEN bias uses the same redraws, as a
percentile interval of the plug-in difference.

Only the aggregate rows (prompt null: the mean deviation ratio and the ENTIGEN bias over the
prompts the two runs share) gate the exit status: with hundreds of prompts, some per-prompt
intervals would exclude the threshold by chance alone. Per-prompt rows are still computed and
flagged for reading.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffsteer.metrics import (
    entigen_bias,
    mean_deviation_ratio,
    mean_difference_interval,
    resample_by_seed,
    resample_counts,
)
from diffsteer.summary import PromptDetail, Summary, load_summary

__all__ = ["DEFAULT_MAX_INCREASE", "Comparison", "MetricChange", "compare_runs", "load_summary"]

DEFAULT_MAX_INCREASE = 0.05
# the plug-in of each metric, as computed on counts (redraws included)
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
    paired: bool = False  # redrawn by shared seeds (else each run on its own)
    plugin_a: float | None = None  # the plain plug-in values (the published formula)
    plugin_b: float | None = None
    plugin_diff: float | None = None


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


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _difference(
    metric: str,
    counts_a: np.ndarray,
    counts_b: np.ndarray,
    reps_a: np.ndarray,
    reps_b: np.ndarray,
) -> tuple[float | None, float | None, tuple[float, float] | None, float | None, float | None]:
    """(A, B, 95% interval of B - A, plug-in A, plug-in B) for one block of prompts and its redraws."""
    fn = METRICS[metric]
    plugin_a, plugin_b = _finite(float(fn(counts_a))), _finite(float(fn(counts_b)))
    if plugin_a is None or plugin_b is None:
        return plugin_a, plugin_b, None, plugin_a, plugin_b
    if metric == "deviation_ratio":
        from diffsteer.metrics import debiased_deviation_ratio

        a = float(np.nanmean(debiased_deviation_ratio(counts_a)[counts_a.sum(axis=-1) > 0]))
        b = float(np.nanmean(debiased_deviation_ratio(counts_b)[counts_b.sum(axis=-1) > 0]))
        _, low, high = mean_difference_interval(counts_a, counts_b, reps_a, reps_b)
        if not (math.isfinite(float(low)) and math.isfinite(float(high))):
            return a, b, None, plugin_a, plugin_b
        # the estimate difference lies inside its interval except where a run's estimate was clipped
        return a, b, (min(float(low), b - a), max(float(high), b - a)), plugin_a, plugin_b
    diffs = fn(reps_b) - fn(reps_a)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size == 0:
        return plugin_a, plugin_b, None, plugin_a, plugin_b
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return plugin_a, plugin_b, (float(lo), float(hi)), plugin_a, plugin_b


def _seed_labels(summary: Summary, mitigation: str, axis: str, prompts: list, classes: list) -> dict | None:
    """prompt -> {seed: class index or -1} from summary details; None if the summary has no seeds."""
    rows: dict[str | None, PromptDetail] = {
        d.prompt: d for d in summary.prompt_details() if d.mitigation == mitigation and d.axis == axis
    }
    out = {}
    for prompt in prompts:
        row = rows.get(prompt)
        if row is None or row.seeds is None or row.labels is None:
            return None
        if len(row.seeds) != len(row.labels):
            return None
        out[prompt] = {
            int(seed): (classes.index(lab) if lab in classes else -1)
            for seed, lab in zip(row.seeds, row.labels, strict=True)
        }
    return out


def _label_matrix(by_prompt: dict, prompts: list, seeds: list[int]) -> np.ndarray:
    return np.array([[by_prompt[p].get(s, -1) for s in seeds] for p in prompts], dtype=np.int64)


def _redraw(
    by_prompt: dict | None, prompts: list, counts: np.ndarray, n_classes: int, n_boot: int, seed: int
) -> np.ndarray:
    """One run's redraws: by seed when its per-seed labels are known, else image by image."""
    if by_prompt is None:
        return resample_counts(counts, n_boot, seed=seed)
    seeds = sorted(set().union(*(set(v) for v in by_prompt.values())))
    return resample_by_seed(_label_matrix(by_prompt, prompts, seeds), n_classes, n_boot, seed=seed)


def _config_notes(a: Summary, b: Summary) -> list[str]:
    cfg_a, cfg_b = a.config, b.config
    differing = [k for k in _IDENTITY_KEYS_SHOWN if getattr(cfg_a, k) != getattr(cfg_b, k)]
    notes = []
    if differing:
        notes.append(
            "the runs differ in "
            + ", ".join(f"{k} ({getattr(cfg_a, k)!r} -> {getattr(cfg_b, k)!r})" for k in differing)
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
    rows_b = {(r.mitigation, r.axis, r.prompt): r for r in sb.results}
    groups = list(dict.fromkeys((r.mitigation, r.axis) for r in sa.results))
    for mitigation, axis in groups:
        prompt_rows = [
            (r, rows_b.get((mitigation, axis, r.prompt)))
            for r in sa.rows(mitigation=mitigation, axis=axis, aggregate=False)
        ]
        common = [(ra, rb) for ra, rb in prompt_rows if rb is not None]
        if not common:
            continue
        classes = list(common[0][0].counts)
        if any(list(rb.counts) != classes for _, rb in common):
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
        prompts = [ra.prompt for ra, _ in common]
        matrix_a = np.array([[ra.counts[c] for c in classes] for ra, _ in common], dtype=np.int64)
        matrix_b = np.array([[rb.counts[c] for c in classes] for _, rb in common], dtype=np.int64)
        seeds_a = _seed_labels(sa, mitigation, axis, prompts, classes)
        seeds_b = _seed_labels(sb, mitigation, axis, prompts, classes)
        paired = (
            seeds_a is not None
            and seeds_b is not None
            and all(set(seeds_a[p]) == set(seeds_b[p]) for p in prompts)
        )
        if paired:
            seeds = sorted(set().union(*(set(v) for v in seeds_a.values())))
            both = np.stack([_label_matrix(seeds_a, prompts, seeds), _label_matrix(seeds_b, prompts, seeds)])
            reps = resample_by_seed(both, len(classes), n_boot, seed=seed)
            reps_a, reps_b = reps[:, 0], reps[:, 1]
            comparison.notes.append(
                f"{mitigation}/{axis}: paired on the {len(seeds)} seeds both runs used (redrawn together)"
            )
        else:
            comparison.notes.append(
                f"{mitigation}/{axis}: "
                + (
                    "the runs used different seeds"
                    if seeds_a is not None and seeds_b is not None
                    else "a summary has no per-seed labels"
                )
                + "; each run's images were redrawn independently (unpaired, wider interval)"
            )
            reps_a = _redraw(seeds_a, prompts, matrix_a, len(classes), n_boot, seed)
            reps_b = _redraw(seeds_b, prompts, matrix_b, len(classes), n_boot, seed + 1)
        blocks = [(None, slice(None))] + [(p, slice(i, i + 1)) for i, p in enumerate(prompts)]
        for prompt, rows in blocks:
            ca, cb = matrix_a[rows], matrix_b[rows]
            for metric in METRICS:
                a, b, ci, plugin_a, plugin_b = _difference(metric, ca, cb, reps_a[:, rows], reps_b[:, rows])
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
                        paired=paired,
                        plugin_a=plugin_a,
                        plugin_b=plugin_b,
                        plugin_diff=None if plugin_a is None or plugin_b is None else plugin_b - plugin_a,
                    )
                )
    if not comparison.changes:
        raise ValueError(f"{run_a} and {run_b} have no (mitigation, axis, prompt) in common to compare")
    return comparison
