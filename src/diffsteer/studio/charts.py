"""What the studio draws: image grids, the shares histogram, and the shares table, from a Comparison."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image

from diffsteer.experiments.preview import image_grid
from diffsteer.studio.session import Comparison, Shares

GRID_COLUMNS = 8
GRID_WIDTH = 512  # pixels of a composed grid; tiny images are upscaled nearest-neighbour to fill it

BASELINE_COLOR = "#9ca3af"
STEERED_COLOR = "#2563eb"
TARGET_COLOR = "#dc2626"


def grid(images: Sequence[Image.Image | None]) -> Image.Image | None:
    """One picture of the images in rows of eight; an unusable image is a grey tile."""
    shown = [im for im in images if im is not None]
    if not shown:
        return None
    size = shown[0].size
    tiles = [im if im is not None else Image.new("RGB", size, "#d1d5db") for im in images]
    columns = min(GRID_COLUMNS, math.ceil(math.sqrt(len(tiles))))  # near-square: two grids sit side by side
    upscale = max(1, GRID_WIDTH // (columns * size[0]))
    return image_grid(tiles, columns=columns, upscale=upscale)


def histogram(
    shares: Mapping[str, Shares], title: str, *, targets: Mapping[str, Mapping[str, float]] | None = None
):
    """A matplotlib figure: one panel per axis, the share of each class among the counted images."""
    import matplotlib

    matplotlib.use("Agg")  # never a window: the figure is rendered to PNG by the web page
    from matplotlib.figure import Figure

    axes_names = list(shares)
    fig = Figure(figsize=(2.6 * max(1, len(axes_names)), 2.6), layout="constrained")
    panels = fig.subplots(1, max(1, len(axes_names)), squeeze=False)[0]
    steered = "steered" in title.lower()
    if not axes_names:
        panels[0].text(0.5, 0.5, "no shares (see the note above)", ha="center", va="center")
        panels[0].set_axis_off()
    for panel, name in zip(panels, axes_names, strict=False):
        s = shares[name]
        classes = list(s.counts)
        values = [s.share(c) or 0.0 for c in classes]
        bars = panel.bar(classes, values, color=STEERED_COLOR if steered else BASELINE_COLOR)
        for bar, cls in zip(bars, classes, strict=True):
            panel.annotate(
                f"{s.counts[cls]}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        target = (targets or {}).get(name)
        if target:
            for i, cls in enumerate(classes):
                panel.hlines(target.get(cls, 0.0), i - 0.4, i + 0.4, colors=TARGET_COLOR, linestyles="--")
        panel.set_ylim(0, 1.05)
        panel.set_title(f"{title}: {name} (n={s.counted})", fontsize=9)
        panel.tick_params(labelsize=8)
    return fig


def _pct(s: Shares, cls: str) -> str:
    share = s.share(cls)
    return "–" if share is None else f"{share:.2f} ({s.counts[cls]}/{s.counted})"


def shares_table(comparison: Comparison) -> str:
    """A Markdown table of the classified shares, baseline next to steered, with fair targets."""
    if not comparison.baseline_shares:
        return "*No classified shares for this run.*"
    lines = [
        "| axis | class | baseline | steered | target |",
        "|---|---|---|---|---|",
    ]
    for axis, base in comparison.baseline_shares.items():
        steered = comparison.steered_shares[axis]
        target = comparison.targets.get(axis, {})
        for cls in base.counts:
            t = f"{target[cls]:.2f}" if cls in target else ""
            lines.append(f"| {axis} | {cls} | {_pct(base, cls)} | {_pct(steered, cls)} | {t} |")
        lines.append(
            f"| {axis} | *not counted* | {base.uncertain} uncertain, {base.dropped} dropped | "
            f"{steered.uncertain} uncertain, {steered.dropped} dropped | |"
        )
    return "\n".join(lines)
