"""The report's fine-tune section: each LoRA adapter's training reward against its KL to the frozen model.

A fine-tune trades closeness to the base model (the KL) for reward; DPOK and SFT trade it at different
rates, so the audit shows each adapter's path through that plane, one curve per adapter, coloured by
method (DPOK blue, SFT orange, darker for a larger ``kl_coef``). The curves are what the adapters
recorded (summary.json's ``finetune`` section); nothing here is computed from images.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from diffsteer.report.plots import _svg
from diffsteer.summary import AdapterCurve, Summary

__all__ = ["finetune_html", "reward_kl_chart"]

METHOD_COLOURS = {"dpok": ("#9ecae1", "#08306b"), "sft": ("#fdd0a2", "#7f2704")}  # light -> dark
OTHER_COLOURS = ("#cccccc", "#333333")
METHOD_MARKERS = {"dpok": "o", "sft": "s"}


def _blend(a: str, b: str, t: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(ca, cb, strict=True))


def _short_name(mitigation: str, limit: int = 32) -> str:
    """``lora:runs/ft_fair/adapter`` -> ``ft_fair``: run folders tell adapters apart."""
    parts = [p for p in mitigation.split(":", 1)[-1].replace("\\", "/").split("/") if p]
    if len(parts) > 1 and parts[-1] == "adapter":
        parts.pop()
    name = parts[-1] if parts else mitigation
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _colour(curve: AdapterCurve, curves: Sequence[AdapterCurve]) -> str:
    light, dark = METHOD_COLOURS.get(curve.method or "", OTHER_COLOURS)
    coefs = sorted({c.kl_coef for c in curves if c.method == curve.method and c.kl_coef is not None})
    shade = coefs.index(curve.kl_coef) / max(1, len(coefs) - 1) if curve.kl_coef in coefs else 1.0
    return _blend(light, dark, 0.35 + 0.65 * shade)


def _label(curve: AdapterCurve) -> str:
    parts = [(curve.method or "?").upper()]
    if curve.kl_coef is not None:
        parts.append(f"kl {curve.kl_coef:g}")
    if curve.learning_rate is not None:
        parts.append(f"lr {curve.learning_rate:g}")
    if curve.lora_scope not in (None, "all"):
        parts.append(f"LoRA on {curve.lora_scope}")
    return f"{_short_name(curve.mitigation)}: {', '.join(parts)}, {curve.reward or '?'}"


def reward_kl_chart(curves: Sequence[AdapterCurve]) -> str:
    """One SVG chart: per adapter, its training reward against its KL at each update (faint points)
    and as running means (the line; dotted for a learning rate below the largest shown), ending at
    the mean of its last updates (the large marker); "" when no adapter recorded a curve."""
    from matplotlib.figure import Figure

    drawn = sorted((c for c in curves if c.running_mean), key=lambda c: (c.method or "", c.kl_coef or 0.0))
    if not drawn:
        return ""
    top_rate = max((c.learning_rate or 0.0) for c in drawn)
    fig = Figure(figsize=(7.2, 4.6))
    ax = fig.add_subplot()
    for curve in drawn:
        colour = _colour(curve, drawn)
        marker = METHOD_MARKERS.get(curve.method or "", "D")
        # the first update's KL is 0 (the adapter starts at the base model): off a log axis
        points = [u for u in curve.updates if u["kl"] > 0]
        ax.plot(
            [u["kl"] for u in points], [u["reward"] for u in points], marker, color=colour, ms=2.5, alpha=0.35
        )
        ax.plot(
            [u["kl"] for u in curve.running_mean],
            [u["reward"] for u in curve.running_mean],
            "-" if (curve.learning_rate or 0.0) >= top_rate else ":",  # dotted: a smaller learning rate
            color=colour,
            linewidth=1.5,
            label=_label(curve),
        )
        if curve.end_kl is not None and curve.end_reward is not None:
            ax.plot(
                [curve.end_kl],
                [curve.end_reward],
                marker,
                color=colour,
                markersize=9,
                markeredgecolor="black",
            )
    ax.set_xscale("log")
    windows = sorted({c.window for c in drawn if c.window})
    window = f"{windows[0]} updates" if len(windows) == 1 else "updates"
    ax.set_xlabel("KL to the frozen model, per trajectory (log scale)")
    ax.set_ylabel("training reward (the adapter's own judge)")
    ax.set_title(
        f"DPOK (o, blue) and SFT (s, orange): reward against KL; points: updates, lines: running means "
        f"of {window},\nlarge markers: the means over the last {window}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    fig.tight_layout()
    return _svg(fig)


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def finetune_html(summary: Summary) -> str:
    """The section's content: what the axes are, the chart, and a row per adapter."""
    section = summary.finetune
    if section is None or not section.adapters:
        return ""
    chart = reward_kl_chart(section.adapters)
    note = (
        f"<p class=muted>Each curve is a LoRA fine-tune compared in this audit: reward is "
        f"{html.escape(section.reward or 'the training reward')}; KL is {html.escape(section.kl or '')}. "
        "Rewards of different judges are not on one scale: compare curves of the same reward. "
        "The oracle-free training reward can rise while the images get worse (read it beside the "
        "trade-off chart above, which judges the audit's own images).</p>"
    )
    rows = [
        "<tr><th class=l>mitigation</th><th class=l>method</th><th class=l>reward</th><th>kl_coef</th>"
        "<th class=l>LoRA on</th><th>learning rate</th><th>updates</th><th>KL, end</th><th>reward, end</th>"
        "<th class=l>curve from</th></tr>"
    ]
    for c in section.adapters:
        rows.append(
            f"<tr><td class=l>{html.escape(c.mitigation)}</td><td class=l>{html.escape(c.method or '–')}</td>"
            f"<td class=l>{html.escape(c.reward or '–')}</td><td>{_number(c.kl_coef, 'g')}</td>"
            f"<td class=l>{html.escape(c.lora_scope or '–')}</td>"
            f"<td>{_number(c.learning_rate, 'g')}</td><td>{len(c.updates)}</td>"
            f"<td>{_number(c.end_kl, '.3g')}</td><td>{_number(c.end_reward, '.4f')}</td>"
            f"<td class='l wrap' style='overflow-wrap:anywhere;min-width:14em'>"
            f"{html.escape(c.source or c.note or '–')}</td></tr>"
        )
    table = f"<table>{''.join(rows)}</table>"
    body = (
        f"<div class='chart narrow'>{chart}</div>"
        if chart
        else "<p>No adapter recorded a training curve.</p>"
    )
    return note + body + table
