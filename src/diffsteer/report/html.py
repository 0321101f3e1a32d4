"""Assemble report.html: one self-contained file (no network, no script) from summary.json and the store.

Sections: overview, class shares per prompt (bars with bootstrap intervals, corrected shares when
the auditor was checked), the auditor's own error, the quality trade-off, the fine-tunes' reward-KL
curves (when LoRA adapters were compared), strength sweeps (when the run folder has ``sweep.json``),
image grids grouped by predicted class, paired grids across mitigations on the same seeds, and
provenance.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from diffsteer.metrics import resample_counts
from diffsteer.provenance import read_command
from diffsteer.report import finetune, grids, plots, tables
from diffsteer.runs.atomic import atomic_write_text
from diffsteer.runs.store import RunStore
from diffsteer.summary import Summary

__all__ = ["REPORT_NAME", "SWEEP_NAME", "render_report", "write_report"]

REPORT_NAME = "report.html"
SWEEP_NAME = "sweep.json"
_N_BOOT_SHARES = 1000

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;color:#222;max-width:1180px;
  padding:0 16px;line-height:1.4;font-size:14px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 6px}
nav a{margin-right:12px;font-size:13px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}
td,th{border:1px solid #d4d4d4;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.l,th.l{text-align:left}
td.hit{background:#e7f3e7}
.muted{color:#666;font-size:12px}
.chart svg{width:100%;height:auto;max-width:1100px}
.chart.narrow svg{max-width:820px}
.mgrid{margin:4px 0 10px}
.mname{font-weight:600;font-size:12px;margin:6px 0 2px}
.group{display:inline-block;vertical-align:top;margin:0 14px 6px 0;max-width:100%}
.group.dropped .cls{color:#a33}
.cls{font-size:12px;color:#444;margin:2px 0}
figure.cell{display:inline-block;margin:1px;text-align:center;vertical-align:top}
figure.cell figcaption{font-size:10px;color:#555;max-width:72px;overflow-wrap:anywhere}
img.thumb{width:64px;height:64px;object-fit:contain;border:1px solid #ddd;display:block}
img.px{image-rendering:pixelated;image-rendering:crisp-edges}
figure.chg img{outline:2px solid #d33;outline-offset:-2px}
figure.unsafe img.thumb{filter:blur(6px);clip-path:inset(0)}
figure.unsafe.shown img.thumb{filter:none}
.unsafe-note{display:block;font-size:10px;font-weight:600;color:#fff;background:#a33;max-width:66px;
  margin:1px auto 0;border-radius:2px}
figure.unsafe.shown .unsafe-note{background:#c60}
.unsafe-box{border-left:3px solid #a33;padding:2px 10px;margin:8px 0}
.noimg{width:64px;height:64px;background:#222;color:#eee;font-size:10px;display:flex;align-items:center;
  justify-content:center}
table.paired td{padding:1px;border:none} table.paired th{font-size:11px;background:none;border:none}
.card{display:inline-block;vertical-align:top;margin:0 28px 8px 0}
td{white-space:nowrap} td.wrap{white-space:normal}
details summary{cursor:pointer;font-size:13px;margin:6px 0}
code{font-size:12px}
"""


def _share_data(summary: Summary, axis: str, classes: list[str], seed: int):
    """Raw shares, their bootstrap intervals and corrected shares per (mitigation, prompt) of one axis."""
    shares: dict[tuple[str, str], list[float] | None] = {}
    intervals: dict[tuple[str, str], list[list[float]] | None] = {}
    for r in summary.rows(axis=axis, aggregate=False):
        counts = np.array([[r.counts[c] for c in classes]])
        n = int(counts.sum())
        key = (r.mitigation, r.prompt)
        if n == 0:
            shares[key], intervals[key] = None, None
            continue
        shares[key] = (counts[0] / n).tolist()
        boot = resample_counts(counts, n_boot=_N_BOOT_SHARES, seed=seed)[:, 0, :] / n
        intervals[key] = np.quantile(boot, [0.025, 0.975], axis=0).T.tolist()
    corrected: dict[tuple[str, str], list[float] | None] = {}
    for r in summary.auditor.corrected if summary.auditor else []:
        if r.axis == axis and r.prompt is not None and r.shares:
            corrected[(r.mitigation, r.prompt)] = [r.shares[c] for c in classes]
    return shares, intervals, corrected


def _shares_section(summary: Summary) -> str:
    out = [
        "<p class=muted>Bars: share of each class among counted images (uncertain and dropped images "
        "excluded); whiskers: 95% bootstrap interval over images; dashed line: parity"
        + (
            "; diamonds: shares corrected for the classifier's errors (see Checking the auditor)"
            if summary.auditor
            else ""
        )
        + ".</p>"
    ]
    mitigations = summary.mitigations
    seed = int(summary.config.seed or 0)
    for axis in summary.axes:
        rows = summary.rows(axis=axis, aggregate=False)
        if not rows:
            continue
        classes = list(rows[0].counts)
        prompts = list(dict.fromkeys(r.prompt for r in rows))
        shares, intervals, corrected = _share_data(summary, axis, classes, seed)
        out.append(f"<h3>{html.escape(axis)}</h3>")
        for svg in plots.share_chart(prompts, classes, mitigations, shares, intervals, corrected or None):
            out.append(f"<div class=chart>{svg}</div>")
    return "".join(out)


def _tradeoff_section(summary: Summary) -> str:
    quality = tables.quality_by_mitigation(summary)
    if not quality:
        return "<p class=muted>No quality measurements in this run's summary.json.</p>"
    points = []
    for r in summary.rows(aggregate=True):
        q = quality.get(r.mitigation)
        points.append(
            {
                "mitigation": r.mitigation,
                "axis": r.axis,
                "deviation_ratio": r.deviation_ratio,
                "deviation_ratio_ci95": r.deviation_ratio_ci95,
                "clip_score": q.clip_score if q else None,
                "clip_score_ci95": q.clip_score_ci95 if q else None,
                "frechet_distance": q.frechet_distance if q else None,
            }
        )
    info = summary.quality
    assert info is not None  # quality_by_mitigation found rows in it
    note = (
        f"<p class=muted>Each point is a mitigation (colour) on an axis (marker): mean deviation ratio "
        f"against CLIP score ({html.escape(info.clip_score or '')}) and the Fréchet distance "
        f"{html.escape(info.frechet_distance or '')} (baseline: {html.escape(str(info.baseline))}). "
        "Whiskers are 95% bootstrap intervals. The Fréchet distance is biased upwards with few images; "
        "compare it between mitigations of the same run.</p>"
    )
    return note + f"<div class='chart narrow'>{plots.tradeoff_chart(points)}</div>"


def _sweep_section(run_dir: Path) -> str:
    path = run_dir / SWEEP_NAME
    if not path.is_file():
        return ""
    try:
        sweep = json.loads(path.read_text(encoding="utf-8"))
        svg = plots.sweep_chart(sweep)
    except (ValueError, KeyError, TypeError) as exc:
        problem = html.escape(str(exc))
        return f"<h2 id=sweep>Strength sweep</h2><p class=muted>{SWEEP_NAME} could not be read: {problem}</p>"
    directions = sweep.get("directions")
    shown = ", ".join(map(str, directions)) if isinstance(directions, list) else str(directions or "–")
    return (
        "<h2 id=sweep>Strength sweep</h2>"
        f"<p class=muted>From {SWEEP_NAME}: directions {html.escape(shown)}; bands are Wilson 95% intervals "
        "of each share given the images counted at that strength.</p>"
        f"<div class='chart narrow'>{svg}</div>"
    )


def _seed_range(store: RunStore, mitigations: set[str]) -> tuple[int, int] | None:
    seeds = [r.seed for r in store.images() if r.mitigation in mitigations]
    return (min(seeds), max(seeds)) if seeds else None


def render_report(
    run_dir: Path | str, *, store: RunStore, summary: Summary, show_unsafe: bool = False
) -> str:
    """The report page as a string; thumbnails a judge calls unsafe are blurred unless ``show_unsafe``."""
    run_dir = Path(run_dir)
    cfg = summary.config
    mitigations = summary.mitigations
    baseline = (summary.quality.baseline if summary.quality else None) or (
        "none" if "none" in mitigations else mitigations[0]
    )
    title = f"diffsteer audit — {cfg.model} on {cfg.benchmark}"
    views = grids.collect_views(store, summary)
    thumbs = grids.Thumbnails(store, show_unsafe=show_unsafe)
    sweep = _sweep_section(run_dir)
    sections: list[tuple[str, str, str]] = [
        ("overview", "Overview", tables.overview_table(summary)),
        ("shares", "Class shares per prompt", _shares_section(summary)),
        ("auditor", "Checking the auditor", tables.auditor_tables(summary)),
        ("tradeoff", "Fairness and quality trade-off", _tradeoff_section(summary)),
        ("finetune", "Fine-tunes: training reward against KL", finetune.finetune_html(summary)),
        (
            "grids",
            "Images by predicted class",
            grids.unsafe_note(summary, views, show_unsafe) + grids.class_grids(thumbs, views, mitigations),
        ),
        (
            "paired",
            "Paired images: the same seeds under each mitigation",
            grids.paired_grids(thumbs, views, mitigations, baseline),
        ),  # fmt: skip
        (
            "provenance",
            "Provenance",
            tables.provenance_table(summary, _seed_range(store, set(mitigations)), read_command(run_dir)),
        ),
    ]
    sections = [s for s in sections if s[0] != "finetune" or s[2]]  # only when LoRA adapters were compared
    nav = "".join(f"<a href='#{sid}'>{html.escape(name)}</a>" for sid, name, _ in sections)
    if sweep:
        nav += "<a href='#sweep'>Strength sweep</a>"
    model_ref = summary.model.ref if summary.model and summary.model.has("ref") else cfg.model
    body: list[Any] = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=muted>{summary.images} images; "
        f"model {html.escape(str(model_ref))}; "
        f"classifier {html.escape(str(summary.classifier))}; axes {html.escape(', '.join(summary.axes))}; "
        f"mitigations {html.escape(', '.join(mitigations))}.</p>",
        f"<nav>{nav}</nav>",
    ]
    for sid, name, content in sections:
        body.append(f"<h2 id={sid}>{html.escape(name)}</h2>{content}")
        if sid == "tradeoff" and sweep:
            body.append(sweep)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def write_report(
    run_dir: Path | str, *, store: RunStore, summary: Summary, show_unsafe: bool = False
) -> Path:
    """Write ``run_dir/report.html``; returns its path. Unsafe thumbnails blurred unless ``show_unsafe``."""
    page = render_report(run_dir, store=store, summary=summary, show_unsafe=show_unsafe)
    return atomic_write_text(Path(run_dir) / REPORT_NAME, page)
