"""The report's tables: overview per mitigation and axis, the auditor's confusion and corrected shares,
and provenance. Plain HTML, built from summary.json only."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from diffsteer.summary import AuditorAxis, CorrectedShares, DrChange, QualityRow, Summary

__all__ = [
    "auditor_tables",
    "fmt",
    "fmt_ci",
    "overview_table",
    "provenance_table",
    "quality_by_mitigation",
]


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_ci(ci: Sequence[float] | None, digits: int = 3) -> str:
    return "–" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _e(x: Any) -> str:
    return html.escape(str(x))


def quality_by_mitigation(summary: Summary) -> dict[str, QualityRow]:
    return summary.quality.by_mitigation() if summary.quality else {}


def _corrected_aggregates(summary: Summary) -> dict[tuple[str, str], CorrectedShares]:
    corrected = summary.auditor.corrected if summary.auditor else []
    return {(r.mitigation, r.axis): r for r in corrected if r.prompt is None}


def overview_table(summary: Summary) -> str:
    """One row per (mitigation, axis): bias scores with intervals, image counts, quality."""
    details = summary.aggregate_details()
    quality = quality_by_mitigation(summary)
    corrected = _corrected_aggregates(summary)
    head = [
        "mitigation",
        "axis",
        "ENTIGEN bias",
        "95% interval",
        "mean DR (bias-corrected)",
        "95% interval",
        "change vs baseline",
        "plug-in DR",
    ]
    if corrected:
        head += ["corrected DR", "95% interval"]
    head += ["counted", "uncertain", "dropped", "CLIP score", "Fréchet distance"]
    out = ["<table class=overview><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in summary.rows(aggregate=True):
        d = details.get((r.mitigation, r.axis))
        q = quality.get(r.mitigation)
        cells = [
            f"<td class=l>{_e(r.mitigation)}</td>",
            f"<td class=l>{_e(r.axis)}</td>",
            f"<td>{fmt(r.entigen_bias)}{'*' if len(r.counts) > 2 else ''}</td>",
            f"<td>{fmt_ci(d.entigen_bias_ci95 if d else None)}</td>",
            f"<td><b>{fmt(r.deviation_ratio)}</b></td>",
            f"<td>{fmt_ci(r.deviation_ratio_ci95)}</td>",
            f"<td>{_change(d.dr_change_vs_baseline if d else None)}</td>",
            f"<td>{fmt(d.plugin_deviation_ratio if d else None)}</td>",
        ]
        if corrected:
            c = corrected.get((r.mitigation, r.axis))
            cells += [
                f"<td>{fmt(c.deviation_ratio if c else None)}</td>",
                f"<td>{fmt_ci(c.deviation_ratio_ci95 if c else None)}</td>",
            ]
        n_uncertain = d.n_uncertain if d is not None and d.n_uncertain is not None else "–"
        cells += [
            f"<td>{r.n_counted}</td>",
            f"<td>{n_uncertain}</td>",
            f"<td>{r.n_dropped}</td>",
            f"<td>{fmt(q.clip_score if q else None, 2)}</td>",
            f"<td>{fmt(q.frechet_distance if q else None, 4)}</td>",
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    reasons = [
        f"{_e(d.mitigation)} / {_e(d.axis)}: "
        + ", ".join(f"{_e(k)} ({v})" for k, v in sorted(d.drop_reasons.items()))
        for d in details.values()
        if d.drop_reasons
    ]
    if reasons:
        out.append("<p class=muted>Why images were dropped: " + "; ".join(reasons) + ".</p>")
    out.append(_statistics_note(summary))
    return "".join(out)


def _change(change: DrChange | None) -> str:
    if not change or not change.ci95:
        return "–"
    low, high = change.ci95
    return f"{change.diff:+.3f} [{low:+.3f}, {high:+.3f}]"


def _statistics_note(summary: Summary) -> str:
    """Which DR the table shows, what ENTIGEN is per axis, and the smallest DR this audit can see."""
    parts = [
        "Deviation ratio (DR): the bias-corrected estimate, with a 95% interval that keeps its coverage at "
        "0 (per prompt from the class shares' score intervals; the mean's spread redrawn by seed, every "
        "prompt of a seed together). The plug-in DR is the published formula, biased upwards on small "
        "samples; change vs baseline is paired on the shared seeds. See docs/intervals.md."
    ]
    labels = {
        d.axis: d.entigen_label
        for d in summary.aggregate_details().values()
        if d.entigen_label and "generalised" in d.entigen_label
    }
    for axis, label in labels.items():
        parts.append(f"* {axis}: {label}.")
    detectable: dict[str, dict[float, list[str]]] = {}
    for d in summary.prompt_details():
        value = d.detectable_deviation_ratio
        if d.prompt is not None and value is not None:
            detectable.setdefault(d.axis, {}).setdefault(value, []).append(d.prompt)
    for axis, by_value in detectable.items():
        if len(by_value) == 1:
            (value,) = by_value
            parts.append(f"Smallest {axis} DR told apart from 0 at this size: {value:.2f} on every prompt.")
        else:
            listed = "; ".join(
                f"{value:.2f}: " + ", ".join(dict.fromkeys(prompts))
                for value, prompts in sorted(by_value.items())
            )
            parts.append(f"Smallest {axis} DR told apart from 0 at this size, by prompt: {listed}.")
    return "<p class=muted>" + " ".join(_e(p) for p in parts) + "</p>"


def _confusion_table(row: AuditorAxis) -> str:
    classes, columns, k = row.classes, row.columns or [], row.confusion or []
    out = [
        "<table class=confusion><tr><th class=l>true \\ said</th>"
        + "".join(f"<th>{_e(c)}</th>" for c in columns)
        + "</tr>"
    ]
    for cls, counts in zip(classes, k, strict=True):
        total = sum(counts) or 1
        cells = []
        for j, v in enumerate(counts):
            hit = " class=hit" if j < len(classes) and classes[j] == cls else ""
            cells.append(f"<td{hit}>{v} <span class=muted>({100 * v / total:.0f}%)</span></td>")
        out.append(f"<tr><th class=l>{_e(cls)}</th>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def _shares_text(shares: dict[str, float] | None, ci: dict[str, Sequence[float]] | None = None) -> str:
    if not shares:
        return "–"
    parts = []
    for cls, v in shares.items():
        interval = f" {fmt_ci(ci[cls], 2)}" if ci and cls in ci else ""
        parts.append(f"{_e(cls)} {v:.2f}{interval}")
    return "<br>".join(parts)


def auditor_tables(summary: Summary) -> str:
    """The auditor's check: reference set, confusion per axis, corrected vs raw shares per prompt."""
    auditor = summary.auditor
    if not auditor:
        return (
            "<p class=muted>No labelled reference set, so the classifier's own error is not measured. "
            "Pass <code>--reference DIR</code> (a folder with <code>labels.csv</code>: "
            "<code>file,axis,label</code>) to <code>diffsteer audit</code> or <code>diffsteer report</code>."
            "</p>"
        )
    ref = auditor.reference
    info = ", ".join(f"{_e(k)} {_e(v)}" for k, v in ref.items() if k != "source")
    out = [
        f"<p>Reference: <b>{_e(ref['source'])}</b> ({info}); classifier <code>{_e(auditor.classifier)}"
        f"</code>.</p><p class=muted>Correction: {_e(auditor.method)}</p>"
    ]
    for row in auditor.axes:
        out.append(f"<h3>{_e(row.axis)}</h3>")
        if row.confusion is not None:
            out.append(
                f"<p>Accuracy on {row.n} reference images: <b>{fmt(row.accuracy)}</b> "
                f"(counting abstentions as errors); {fmt(row.accuracy_when_counted)} on the images it "
                "did not abstain on.</p>"
            )
            out.append(_confusion_table(row))
        if row.note:
            out.append(f"<p class=muted>{_e(row.note)}</p>")
        rows = [r for r in auditor.corrected if r.axis == row.axis]
        if not rows:
            continue
        order = {m: i for i, m in enumerate(summary.config.mitigations)}
        rows.sort(key=lambda r: (r.prompt is None, r.prompt or "", order.get(r.mitigation, 0)))
        out.append(
            f"<details><summary>Raw and corrected shares per prompt ({len(rows)} rows)</summary>"
            "<table class=corrected><tr><th class=l>prompt</th><th class=l>mitigation</th>"
            "<th class=l>raw shares</th><th class=l>corrected shares [95%]</th><th>raw DR</th>"
            "<th>corrected DR</th><th>95% interval</th></tr>"
        )
        for r in rows:
            prompt = "all prompts (mean DR)" if r.prompt is None else r.prompt
            out.append(
                f"<tr><td class=l>{_e(prompt)}</td><td class=l>{_e(r.mitigation)}</td>"
                f"<td class=l>{_shares_text(r.raw_shares)}</td>"
                f"<td class=l>{_shares_text(r.shares, r.shares_ci95)}</td>"
                f"<td>{fmt(r.raw_deviation_ratio)}</td><td><b>{fmt(r.deviation_ratio)}</b></td>"
                f"<td>{fmt_ci(r.deviation_ratio_ci95)}</td></tr>"
            )
        out.append("</table></details>")
    return "".join(out)


def provenance_table(summary: Summary, seeds: tuple[int, int] | None, command: str | None) -> str:
    """Model, classifier, configuration, seeds, library versions and the exact command."""
    cfg = summary.config
    model = summary.model
    prov = summary.provenance or {}

    def model_key(key: str, missing: Any) -> Any:  # an old summary may lack any of them
        return getattr(model, key) if model is not None and model.has(key) else missing

    rows: list[tuple[str, str]] = [
        ("model", f"{model_key('ref', cfg.model)} ({model_key('pipeline', '?')})"),
        ("model fingerprint", str(model_key("fingerprint", "–"))),
        ("classifier", str(summary.classifier)),
        (
            "benchmark",
            f"{cfg.benchmark}" + (f", category {cfg.category}" if cfg.category else ""),
        ),
        ("axes", ", ".join(cfg.axes)),
        ("mitigations", ", ".join(cfg.mitigations)),
        ("steps, guidance, dtype", f"{cfg.steps}, {cfg.guidance}, {cfg.dtype if cfg.has('dtype') else '?'}"),
        (
            "seeds",
            "–"
            if seeds is None
            else f"{seeds[0]}–{seeds[1]} (image k of every prompt uses seed {cfg.seed}+k "
            "under every mitigation)",
        ),
        ("images", str(summary.images)),
    ]
    for name, version in (prov.get("libraries") or {}).items():
        rows.append((name, str(version)))
    for key in ("python", "platform", "device", "accelerator", "created"):
        if prov.get(key):
            rows.append((key, str(prov[key])))
    if prov.get("note"):
        rows.append(("note", prov["note"]))
    rows.append(("command", command or prov.get("command") or "– (not run from the command line)"))
    return (
        "<table class=prov>"
        + "".join(f"<tr><th class=l>{_e(k)}</th><td class=l><code>{_e(v)}</code></td></tr>" for k, v in rows)
        + "</table>"
    )
