"""The report's charts: matplotlib figures rendered to inline SVG.

Why SVG from matplotlib rather than a JavaScript plotting library: the report must open offline as
one file; SVG needs no script (so no console errors and nothing to load), stays sharp at any zoom,
and is small when text is kept as text (``svg.fonttype = none``). Every figure gets its own id salt
so the ids of several inline SVGs never collide in one page.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["share_chart", "sweep_chart", "tradeoff_chart", "wilson_interval"]

PALETTE = ("#4a78c2", "#e07b39", "#3a9b5b", "#b5485b", "#8a6bbf", "#7a7a7a", "#c2a83e", "#3fa7b5")
CLASS_PALETTE = ("#5b8def", "#ef8a5b", "#62b37a", "#c06c84", "#9d7fd0", "#9a9a9a")
MARKERS = ("o", "s", "^", "D", "v", "P")
_PROMPTS_PER_FIGURE = 16
_COLUMNS = 4
_salt = itertools.count()


_RC = {
    "svg.fonttype": "none",  # text stays text: small, selectable, no glyph paths
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],  # the font matplotlib measures with; browsers fall back cleanly
}


def _round_attribute(match: re.Match) -> str:
    """Geometry to 0.01 px (text content, e.g. tick labels, is never touched)."""
    return match.group(1) + re.sub(r"(\d\.\d{2})\d+", r"\1", match.group(2)) + '"'


def _svg(fig: Figure) -> str:
    """The figure as a compact ``<svg>`` element for inlining, scaled to its container's width.

    Unreferenced ids (matplotlib names every group "figure_1", "axes_1", ...) are dropped so several
    charts in one page never repeat an id; coordinates are rounded to 0.01 px.
    """
    buf = io.StringIO()
    with matplotlib.rc_context(_RC | {"svg.hashsalt": f"diffsteer-{next(_salt)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    referenced = set(re.findall(r"#([\w.-]+)\)?\"", text)) | set(re.findall(r"url\(#([\w.-]+)\)", text))
    text = re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in referenced else "", text)
    text = re.sub(r'( (?:d|x|y|transform|viewBox)=")([^"]*)"', _round_attribute, text)
    text = re.sub(r' transform="rotate\(-0 [^)]*\)"', "", text)  # matplotlib's no-op rotations
    text = re.sub(r"\s*\n\s*", " ", text)
    # Drop the fixed size so CSS can scale it; the viewBox keeps the aspect ratio.
    return re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r"<svg\1", text, count=1)


def error_bars(value: float, interval: Sequence[float] | None) -> list[list[float]] | None:
    """matplotlib's [[below], [above]] for one point; never negative (an interval that leaves out its
    point, e.g. a clipped estimate, draws as a one-sided bar), None when the interval is missing or odd."""
    if interval is None or len(interval) != 2:
        return None
    low, high = (float(v) if v is not None else math.nan for v in interval)
    if not all(math.isfinite(v) for v in (value, low, high)):
        return None
    return [[max(0.0, value - low)], [max(0.0, high - value)]]


def _short(text: str, limit: int = 42) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def share_chart(
    prompts: Sequence[str],
    classes: Sequence[str],
    mitigations: Sequence[str],
    shares: Mapping[tuple[str, str], Sequence[float] | None],
    intervals: Mapping[tuple[str, str], Sequence[Sequence[float]] | None],
    corrected: Mapping[tuple[str, str], Sequence[float] | None] | None = None,
) -> list[str]:
    """Bars of class shares per prompt (small multiples), one bar per mitigation, 95% interval whiskers.

    ``shares[(mitigation, prompt)]`` are the raw shares in ``classes`` order, ``intervals`` their
    (low, high) per class; ``corrected`` adds black diamonds (shares corrected for the classifier's
    errors). Returns one SVG per block of at most 16 prompts.
    """
    svgs = []
    for start in range(0, len(prompts), _PROMPTS_PER_FIGURE):
        block = prompts[start : start + _PROMPTS_PER_FIGURE]
        cols = min(_COLUMNS, len(block))
        rows = math.ceil(len(block) / cols)
        fig = Figure(figsize=(2.6 * cols + 0.4, 2.1 * rows + 0.5))
        width = 0.8 / max(1, len(mitigations))
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        for ax in axes.flat[len(block) :]:
            ax.set_visible(False)
        for ax, prompt in zip(axes.flat, block, strict=False):
            ax.axhline(1 / len(classes), color="#999", lw=0.8, ls="--", zorder=0)
            for m_i, mitigation in enumerate(mitigations):
                values = shares.get((mitigation, prompt))
                if values is None:
                    continue
                xs = [c_i - 0.4 + width * (m_i + 0.5) for c_i in range(len(classes))]
                ax.bar(xs, values, width=width * 0.92, color=PALETTE[m_i % len(PALETTE)], zorder=2)
                ci = intervals.get((mitigation, prompt))
                if ci is not None:
                    low = [max(0.0, v - lo) for v, (lo, _) in zip(values, ci, strict=True)]
                    high = [max(0.0, hi - v) for v, (_, hi) in zip(values, ci, strict=True)]
                    ax.errorbar(xs, values, yerr=[low, high], fmt="none", ecolor="#222", lw=0.9, capsize=2)
                fixed = corrected.get((mitigation, prompt)) if corrected else None
                if fixed is not None:
                    ax.scatter(xs, fixed, marker="D", s=14, color="black", zorder=3)
            ax.set_title(_short(prompt), fontsize=8)
            ax.set_xticks(range(len(classes)), [_short(c, 12) for c in classes], fontsize=8)
            ax.set_ylim(0, 1.05)
            ax.tick_params(axis="y", labelsize=7)
        handles = [Patch(color=PALETTE[i % len(PALETTE)], label=m) for i, m in enumerate(mitigations)]
        if corrected:
            handles.append(Line2D([], [], marker="D", ls="", color="black", label="corrected for errors"))
        handles.append(Line2D([], [], ls="--", color="#999", label="parity"))
        fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
        fig.subplots_adjust(top=1 - 0.45 / fig.get_figheight(), hspace=0.55, wspace=0.12)
        svgs.append(_svg(fig))
    return svgs


def tradeoff_chart(points: Sequence[Mapping[str, Any]]) -> str:
    """Mean deviation ratio against quality, one point per (mitigation, axis), with 95% intervals.

    Each point: ``mitigation``, ``axis``, ``deviation_ratio``, ``deviation_ratio_ci95``,
    ``clip_score``, ``clip_score_ci95``, ``frechet_distance``.
    """
    fig = Figure(figsize=(8.4, 3.3))
    left, right = fig.subplots(1, 2, sharey=True)
    mitigations = list(dict.fromkeys(p["mitigation"] for p in points))
    axes_names = list(dict.fromkeys(p["axis"] for p in points))
    for p in points:
        colour = PALETTE[mitigations.index(p["mitigation"]) % len(PALETTE)]
        marker = MARKERS[axes_names.index(p["axis"]) % len(MARKERS)]
        y, yci = p["deviation_ratio"], p.get("deviation_ratio_ci95")
        if y is None:
            continue
        yerr = error_bars(y, yci)
        for ax, key in ((left, "clip_score"), (right, "frechet_distance")):
            x = p.get(key)
            if x is None:
                continue
            xci = p.get(f"{key}_ci95")
            xerr = error_bars(x, xci)
            ax.errorbar(
                [x],
                [y],
                xerr=xerr,
                yerr=yerr,
                fmt=marker,
                color=colour,
                ecolor=colour,
                ms=6,
                capsize=2,
                lw=0.9,
            )
            ax.annotate(p["mitigation"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    left.set_xlabel("CLIP score (higher: closer to the prompt)", fontsize=8)
    right.set_xlabel("Fréchet distance to baseline images (CLIP features)", fontsize=8)
    left.set_ylabel("mean DR, bias-corrected (lower: fairer)", fontsize=8)
    left.set_ylim(0, 1.05)
    for ax in (left, right):
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], marker=MARKERS[i % len(MARKERS)], ls="", color="#444", label=a)
        for i, a in enumerate(axes_names)
    ]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.subplots_adjust(top=0.88, wspace=0.08)
    return _svg(fig)


def wilson_interval(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial share (sweeps store shares and counts, not images)."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def sweep_chart(sweep: Mapping[str, Any]) -> str:
    """Strength-sweep curves: class shares (Wilson 95% bands), CLIP score and Fréchet distance vs weight."""
    weights = list(sweep["weights"])
    ns = list(sweep.get("n") or [0] * len(weights))
    panels = [("shares", "class share")]
    if sweep.get("clip_score"):
        panels.append(("clip_score", "CLIP score"))
    if sweep.get("frechet_distance"):
        panels.append(("frechet_distance", "Fréchet distance (CLIP features)"))
    fig = Figure(figsize=(3.0 * len(panels) + 0.4, 2.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels, strict=True):
        if key == "shares":
            for i, (cls, values) in enumerate(sweep["shares"].items()):
                colour = CLASS_PALETTE[i % len(CLASS_PALETTE)]
                ax.plot(weights, values, marker="o", ms=3, color=colour, label=cls)
                bands = [wilson_interval(v, n) for v, n in zip(values, ns, strict=True)] if any(ns) else None
                if bands:
                    ax.fill_between(
                        weights, [b[0] for b in bands], [b[1] for b in bands], color=colour, alpha=0.18
                    )
            ax.set_ylim(0, 1.02)
            ax.axhline(1 / max(1, len(sweep["shares"])), color="#999", lw=0.8, ls="--")
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.plot(
                weights,
                [v if v is not None else math.nan for v in sweep[key]],
                marker="o",
                ms=3,
                color="#444",
            )
        ax.set_xlabel("strength (weight)", fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    prompt = _short(str(sweep.get("prompt", "")), 60)
    title = f"{sweep.get('kind', 'sweep')} on “{prompt}” ({sweep.get('axis', '')})"
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.35, top=0.85)
    return _svg(fig)
