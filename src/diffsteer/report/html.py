"""Render an audit's summary and images into a single self-contained report.html.

Images are inlined as base64 PNG thumbnails, upscaled with nearest-neighbour so small images stay
crisp; only the first few images of each prompt and mitigation are shown, grouped by predicted
class, so the file stays small however large the run is.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

from PIL import Image

from diffsteer.store import RunStore

REPORT_NAME = "report.html"
THUMBS_PER_CELL = 12
THUMB_PX = 64

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px} h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.bar{display:inline-block;height:10px;background:#4a78c2;vertical-align:middle}
.grid img{image-rendering:pixelated;margin:1px;border:1px solid #ddd}
.cls{font-size:12px;color:#555;margin:4px 0 2px}
.muted{color:#777;font-size:12px}
"""


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _thumb(img: Image.Image) -> str:
    scale = max(1, THUMB_PX // max(img.size))
    big = img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img
    if max(big.size) > THUMB_PX * 2:
        big = big.resize((THUMB_PX * 2, THUMB_PX * 2))
    buf = io.BytesIO()
    big.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _overview(summary: dict) -> str:
    rows = [r for r in summary["results"] if r["prompt"] is None]
    details = {(d["mitigation"], d["axis"]): d for d in summary.get("details", []) if d["prompt"] is None}
    out = [
        "<table><tr><th class=l>mitigation</th><th class=l>axis</th><th>ENTIGEN bias</th>"
        "<th>mean deviation ratio</th><th>95% interval</th><th>images counted</th><th>uncertain</th>"
        "<th>dropped</th></tr>"
    ]
    for r in rows:
        d = details.get((r["mitigation"], r["axis"]), {})
        ci = r["deviation_ratio_ci95"]
        out.append(
            f"<tr><td class=l>{html.escape(r['mitigation'])}</td><td class=l>{html.escape(r['axis'])}</td>"
            f"<td>{_fmt(r['entigen_bias'])}</td><td>{_fmt(r['deviation_ratio'])}</td>"
            f"<td>{'–' if not ci else f'[{ci[0]:.3f}, {ci[1]:.3f}]'}</td><td>{sum(r['counts'].values())}</td>"
            f"<td>{d.get('n_uncertain', '–')}</td><td>{r['n_dropped']}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def _shares(summary: dict) -> str:
    out = []
    rows = [r for r in summary["results"] if r["prompt"] is not None]
    by_axis: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_axis[r["axis"]].append(r)
    for axis, axis_rows in by_axis.items():
        classes = list(axis_rows[0]["counts"])
        out.append(
            f"<h3>{html.escape(axis)}</h3><table><tr><th class=l>prompt</th><th class=l>mitigation</th>"
        )
        out += [f"<th class=l>{html.escape(c)} share</th>" for c in classes]
        out.append("<th>deviation ratio</th><th>95% interval</th><th>n</th></tr>")
        for r in sorted(axis_rows, key=lambda r: (r["prompt"], r["mitigation"])):
            n = sum(r["counts"].values())
            cells = []
            for c in classes:
                share = r["counts"][c] / n if n else 0.0
                cells.append(
                    f"<td class=l><span class=bar style='width:{share * 80:.0f}px'></span> {share:.2f}</td>"
                )
            ci = r["deviation_ratio_ci95"]
            out.append(
                f"<tr><td class=l>{html.escape(r['prompt'])}</td>"
                f"<td class=l>{html.escape(r['mitigation'])}</td>"
                + "".join(cells)
                + f"<td>{_fmt(r['deviation_ratio'])}</td>"
                f"<td>{'–' if not ci else f'[{ci[0]:.2f}, {ci[1]:.2f}]'}</td><td>{n}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def _grids(store: RunStore, summary: dict) -> str:
    classifier = summary["classifier"]
    axis = summary["config"]["axes"][0]
    labels = {lab.key: lab for lab in store.labels(classifier) if lab.axis == axis}
    cells: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for rec in store.images():
        lab = labels.get(rec.key)
        group = (
            (rec.drop_reason or "dropped")
            if rec.status != "ok"
            else (lab.label if lab and lab.label else f"dropped: {lab.reason if lab else 'not classified'}")
        )
        bucket = cells[(rec.prompt, rec.mitigation)][group]
        if len(bucket) < THUMBS_PER_CELL:
            bucket.append(rec)
    out = [
        f"<p class=muted>Grouped by predicted {html.escape(axis)}; at most {THUMBS_PER_CELL} images per "
        "group.</p>"
    ]
    for (prompt, mitigation), groups in sorted(cells.items()):
        out.append(f"<h3>{html.escape(prompt)} — {html.escape(mitigation)}</h3><div class=grid>")
        for group, recs in sorted(groups.items()):
            out.append(f"<div class=cls>{html.escape(group)}</div>")
            for rec in recs:
                if rec.png is None:
                    continue
                title = html.escape(f"seed {rec.seed}: {rec.final_prompt}")
                out.append(f"<img src='{_thumb(store.load_image(rec))}' title='{title}' alt='{title}'>")
        out.append("</div>")
    return "".join(out)


def write_report(run_dir: Path | str, *, store: RunStore, summary: dict) -> Path:
    """Write ``run_dir/report.html`` and return its path."""
    cfg = summary["config"]
    title = f"diffsteer audit — {cfg['model']} on {cfg['benchmark']}"
    model = summary.get("model", {})
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=muted>model {html.escape(str(model.get('ref')))} "
        f"({html.escape(str(model.get('pipeline')))},"
        f" fingerprint {html.escape(str(model.get('fingerprint')))}); classifier "
        f"{html.escape(str(summary['classifier']))}; {summary['images']} images; steps {cfg['steps']}, "
        f"guidance {cfg['guidance']}, seeds {cfg['seed']}..</p>",
        "<h2>Overview</h2>",
        _overview(summary),
        "<h2>Class shares per prompt</h2>",
        _shares(summary),
        "<h2>Images</h2>",
        _grids(store, summary),
    ]
    page = (
        f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )
    path = Path(run_dir) / REPORT_NAME
    path.write_text(page, encoding="utf-8")
    return path
