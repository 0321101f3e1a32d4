"""Image grids of the report: per prompt grouped by predicted class, and paired across mitigations.

Thumbnails are inlined as data URIs so the report is one file. Images that a judge calls unsafe (their
label on an unsafe concept's axis is its unsafe class, from summary.json's ``safety`` section) are
blurred with CSS and marked with a visible note, unless the report is written with ``show_unsafe``;
the image data is the same either way (the blur spares the reader, it hides nothing from the file).

Small images (pictoworld's 32x32) are embedded at their own size and upscaled by the browser with
``image-rendering: pixelated``, which keeps them crisp and the file small; larger images are shrunk to
a 96-pixel JPEG (a photograph's thumbnail as PNG would be several times larger for no visible gain).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from diffsteer.runs.store import ImageRecord, RunStore
from diffsteer.summary import Summary

__all__ = [
    "ImageView",
    "Thumbnails",
    "class_grids",
    "collect_views",
    "paired_grids",
    "thumbnail_uri",
    "unsafe_note",
]

THUMB_MAX = 96
PER_GROUP = 10
PAIRED_SEEDS = 12
DROPPED = "dropped"


def thumbnail_uri(image: Image.Image) -> tuple[str, bool]:
    """A data URI of the image's thumbnail and whether it is pixel art to upscale crisply."""
    buf = io.BytesIO()
    if max(image.size) <= THUMB_MAX:
        image.convert("RGB").save(buf, format="PNG", optimize=True)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), True
    thumb = image.convert("RGB")
    thumb.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS)
    thumb.save(buf, format="JPEG", quality=85, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), False


@dataclass
class ImageView:
    """One image as the report shows it: its record, joint label over the axes, or why it was dropped."""

    record: ImageRecord
    label: str | None  # e.g. "man · dark"; None when dropped
    reason: str | None  # why it was not counted (None when counted or uncertain on every axis)
    unsafe: tuple[str, ...] = ()  # the unsafe concepts a judge found in the image

    @property
    def group(self) -> str:
        if self.label is not None:
            return self.label
        return f"{DROPPED}: {_reason_kind(self.reason)}"


def _reason_kind(reason: str | None) -> str:
    """The reason without per-image numbers, e.g. "person filter" for "person filter: ... (p=0.31)"."""
    if not reason:
        return "no label"
    return reason.split(":")[0].split("(")[0].strip()


def collect_views(store: RunStore, summary: Summary) -> list[ImageView]:
    """Every image of the run's mitigations with its joint predicted label (axes in the audit's order)."""
    axes = summary.axes
    mitigations = set(summary.mitigations)
    concepts = summary.safety.concepts if summary.safety else []
    labels: dict[str, dict[str, object]] = defaultdict(dict)
    for lab in store.labels(summary.classifier):
        labels[lab.key][lab.axis] = lab
    views = []
    for rec in store.images():
        if rec.mitigation not in mitigations:
            continue
        if rec.status != "ok":
            views.append(ImageView(rec, None, rec.drop_reason or DROPPED))
            continue
        per_axis = labels.get(rec.key, {})
        # judged per concept, so an image dropped on another axis is still blurred when it is unsafe
        unsafe = tuple(
            c.name for c in concepts if c.axis in per_axis and per_axis[c.axis].label == c.unsafe_class
        )
        missing = [a for a in axes if a not in per_axis]
        abstained = [per_axis[a] for a in axes if a in per_axis and per_axis[a].label is None]
        if missing or abstained:
            reason = abstained[0].reason if abstained else "not classified"
            views.append(ImageView(rec, None, reason, unsafe))
            continue
        views.append(ImageView(rec, " · ".join(per_axis[a].label for a in axes), None, unsafe))
    return views


class Thumbnails:
    """Caches each image's data URI: the class grid and the paired grid show the same images.

    ``show_unsafe``: show unsafe images unblurred (they keep their note either way)."""

    def __init__(self, store: RunStore, *, show_unsafe: bool = False) -> None:
        self.store = store
        self.show_unsafe = show_unsafe
        self._cache: dict[str, tuple[str, bool]] = {}

    def img(self, view: ImageView, caption: str | None = None, extra_class: str = "") -> str:
        rec = view.record
        title = html.escape(
            f"seed {rec.seed} (image {rec.image_index}) · {view.label or view.reason} · {rec.final_prompt}"
        )
        if rec.png is None:
            inner = f"<div class='noimg' title='{title}'>no image</div>"
        else:
            if rec.png not in self._cache:
                self._cache[rec.png] = thumbnail_uri(self.store.load_image(rec))
            uri, pixel_art = self._cache[rec.png]
            cls = "thumb px" if pixel_art else "thumb"
            inner = f"<img class='{cls}' src='{uri}' alt='{title}' title='{title}'>"
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        if view.unsafe and rec.png is not None:
            concepts = html.escape(", ".join(view.unsafe))
            state = "shown" if self.show_unsafe else "blurred"
            extra_class = f"{extra_class} unsafe{' shown' if self.show_unsafe else ''}".strip()
            inner += f"<span class=unsafe-note title='judged unsafe: {concepts}'>unsafe, {state}</span>"
        return f"<figure class='cell {extra_class}'>{inner}{cap}</figure>"


def _ordered_groups(views: Sequence[ImageView]) -> list[tuple[str, list[ImageView]]]:
    groups: dict[str, list[ImageView]] = defaultdict(list)
    for view in views:
        groups[view.group].append(view)
    # Counted classes first (largest first), then uncertain combinations, then dropped.
    return sorted(
        groups.items(),
        key=lambda kv: (kv[0].startswith(DROPPED), "uncertain" in kv[0], -len(kv[1]), kv[0]),
    )


def class_grids(thumbs: Thumbnails, views: Sequence[ImageView], mitigations: Sequence[str]) -> str:
    """Per prompt and mitigation, images grouped by predicted class; dropped ones with their reason."""
    by_prompt: dict[str, dict[str, list[ImageView]]] = defaultdict(lambda: defaultdict(list))
    for view in views:
        by_prompt[view.record.prompt][view.record.mitigation].append(view)
    out = [
        f"<p class=muted>At most {PER_GROUP} images per group; hover an image for its seed, labels and the "
        "prompt it was generated from. Dropped images show the reason they were not counted.</p>"
    ]
    for prompt, per_mitigation in by_prompt.items():
        out.append(f"<div class=card><h3>{html.escape(prompt)}</h3>")
        for mitigation in mitigations:
            mviews = per_mitigation.get(mitigation)
            if not mviews:
                continue
            out.append(f"<div class=mgrid><div class=mname>{html.escape(mitigation)}</div>")
            for group, members in _ordered_groups(mviews):
                dropped = group.startswith(DROPPED)
                shown = members[:PER_GROUP]
                out.append(
                    f"<div class='group{' dropped' if dropped else ''}'><div class=cls>{html.escape(group)} "
                    f"<span class=muted>({len(members)}"
                    f"{f', showing {len(shown)}' if len(shown) < len(members) else ''})</span></div>"
                )
                for view in shown:
                    out.append(thumbs.img(view, caption=view.reason if dropped else None))
                out.append("</div>")
            out.append("</div>")
        out.append("</div>")
    return "".join(out)


def paired_grids(
    thumbs: Thumbnails, views: Sequence[ImageView], mitigations: Sequence[str], baseline: str
) -> str:
    """Per prompt, one row per mitigation over the same seeds (image index); changed labels are marked."""
    if len(mitigations) < 2:
        return "<p class=muted>Only one mitigation in this run: nothing to pair.</p>"
    cell: dict[tuple[str, str, int], ImageView] = {}
    for view in views:
        rec = view.record
        cell[(rec.prompt, rec.mitigation, rec.image_index)] = view
    prompts = list(dict.fromkeys(v.record.prompt for v in views))
    order = [baseline, *[m for m in mitigations if m != baseline]]
    out = [
        f"<p class=muted>Image <i>k</i> of a prompt starts from the same seed under every mitigation. "
        f"First {PAIRED_SEEDS} seeds per prompt; a red frame marks a predicted label that differs from "
        f"{html.escape(baseline)}'s on the same seed.</p>"
    ]
    for prompt in prompts:
        indices = sorted({k for (p, _, k) in cell if p == prompt})
        shown = indices[:PAIRED_SEEDS]
        changes = []
        for mitigation in order[1:]:
            pairs = [
                (cell[(prompt, baseline, k)], cell[(prompt, mitigation, k)])
                for k in indices
                if (prompt, baseline, k) in cell and (prompt, mitigation, k) in cell
            ]
            both = [(a, b) for a, b in pairs if a.label is not None and b.label is not None]
            flipped = sum(a.label != b.label for a, b in both)
            changes.append(f"{html.escape(mitigation)}: label changed on {flipped} of {len(both)} seeds")
        out.append(f"<div class=card><h3>{html.escape(prompt)}</h3><p class=muted>{'; '.join(changes)}</p>")
        out.append("<table class=paired><tr><th></th>")
        out += [f"<th>seed {_cell_seed(cell, prompt, order, k)}</th>" for k in shown]
        out.append("</tr>")
        for mitigation in order:
            out.append(f"<tr><th class=l>{html.escape(mitigation)}</th>")
            for k in shown:
                view = cell.get((prompt, mitigation, k))
                if view is None:
                    out.append("<td></td>")
                    continue
                base = cell.get((prompt, baseline, k))
                changed = mitigation != baseline and base is not None and base.label != view.label
                caption = view.label if view.label is not None else _reason_kind(view.reason)
                out.append(
                    f"<td>{thumbs.img(view, caption=caption, extra_class='chg' if changed else '')}</td>"
                )
            out.append("</tr>")
        out.append("</table></div>")
    return "".join(out)


def _cell_seed(cell: dict[tuple[str, str, int], ImageView], prompt: str, order: Sequence[str], k: int) -> int:
    for mitigation in order:
        view = cell.get((prompt, mitigation, k))
        if view is not None:
            return view.record.seed
    return k


def unsafe_note(summary: Summary, views: Sequence[ImageView], show_unsafe: bool) -> str:
    """The unsafe rate of each concept per mitigation, and how many thumbnails are blurred (or shown).

    Empty when the audit judged no unsafe concept (no safety axis among its axes).
    """
    safety = summary.safety
    if safety is None or not safety.concepts:
        return ""
    unsafe = [v for v in views if v.unsafe and v.record.png is not None]
    judged = "; ".join(
        f"{html.escape(c.name)}: class <i>{html.escape(c.unsafe_class)}</i> on the "
        f"<code>{html.escape(c.axis)}</code> axis"
        for c in safety.concepts
    )
    if show_unsafe:
        action = f"{len(unsafe)} images judged unsafe are <b>shown unblurred</b> (<code>--show-unsafe</code>)"
    else:
        action = (
            f"{len(unsafe)} images judged unsafe are <b>blurred</b>; rebuild with "
            "<code>diffsteer report RUN_DIR --show-unsafe</code> to see them"
        )
    rows = [
        "<table><tr><th class=l>mitigation</th><th class=l>concept</th><th>unsafe rate</th>"
        "<th>95% interval</th><th>unsafe / counted</th></tr>"
    ]
    for r in safety.rates:
        if r.prompt is not None:
            continue
        rate, ci = r.unsafe_rate, r.unsafe_rate_ci95
        rows.append(
            f"<tr><td class=l>{html.escape(r.mitigation)}</td><td class=l>{html.escape(r.concept)}</td>"
            f"<td>{'–' if rate is None else f'{rate:.3f}'}</td>"
            f"<td>{'–' if not ci else f'[{ci[0]:.3f}, {ci[1]:.3f}]'}</td>"
            f"<td>{r.n_unsafe} / {r.n}</td></tr>"
        )
    rows.append("</table>")
    if safety.changes:
        rows.append(
            "<p>Each mitigation against the baseline, on the prompts both made (reduction = 1 - rate / "
            "baseline rate; negative: more unsafe images):</p><table><tr><th class=l>mitigation</th>"
            "<th class=l>concept</th><th class=l>baseline</th><th>reduction</th><th>95% interval</th>"
            "<th>prompts</th></tr>"
        )
        for c in safety.changes:
            value, ci = c.reduction, c.reduction_ci95
            rows.append(
                f"<tr><td class=l>{html.escape(c.mitigation)}</td><td class=l>{html.escape(c.concept)}</td>"
                f"<td class=l>{html.escape(c.baseline)}</td>"
                f"<td>{'–' if value is None else f'{value:.0%}'}</td>"
                f"<td>{'–' if not ci else f'[{ci[0]:.0%}, {ci[1]:.0%}]'}</td><td>{c.prompts}</td></tr>"
            )
        rows.append("</table>")
    return (
        f"<div class=unsafe-box><p>Unsafe content, judged by CLIP zero-shot ({judged}). {action}.</p>"
        "<p class=muted>Unsafe rate: share of counted images labelled unsafe, pooled over prompts. "
        "Interval: exact (Clopper-Pearson), widened for the starting noise that every prompt shares on "
        'a seed (docs/intervals.md, "Unsafe rates").</p>'
        f"{''.join(rows)}</div>"
    )
