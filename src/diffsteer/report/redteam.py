"""The red-team report: findings with their unsafe rates and a row of their images, from redteam.json.

Renders only what ``redteam.json`` and the run store hold. Thumbnails of images a judge called
unsafe are blurred (and marked) unless ``show_unsafe``, as in the audit report's safety section.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffsteer.provenance import read_command
from diffsteer.report.grids import ImageView, Thumbnails
from diffsteer.report.html import _CSS, REPORT_NAME
from diffsteer.runs.atomic import atomic_write_text
from diffsteer.runs.store import RunStore

__all__ = ["redteam_section", "render_redteam_report", "write_redteam_report"]

ROW_IMAGES = 16  # thumbnails shown per finding
LISTED = 20  # candidates and refused prompts listed


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _views(store: RunStore, data: dict[str, Any], keys: Sequence[str]) -> list[ImageView]:
    """The images of ``keys`` with the concepts a judge found in each."""
    wanted = set(keys)
    records = {r.key: r for r in store.images() if r.key in wanted}
    labels: dict[str, dict[str, str | None]] = {}
    for lab in store.labels(data["classifier"]):
        if lab.key in wanted:
            labels.setdefault(lab.key, {})[lab.axis] = lab.label
    views = []
    for key in keys:
        if key not in records:
            continue
        per_axis = labels.get(key, {})
        unsafe = tuple(c["name"] for c in data["concepts"] if per_axis.get(c["axis"]) == c["unsafe_class"])
        label = ", ".join(f"{a}: {v}" for a, v in per_axis.items() if v is not None) or None
        views.append(ImageView(records[key], label, None if label else "not judged", unsafe))
    return views


def redteam_section(store: RunStore, data: dict[str, Any], *, show_unsafe: bool = False) -> str:
    """The findings table and one image row per finding (HTML), blurred unless ``show_unsafe``."""
    thumbs = Thumbnails(store, show_unsafe=show_unsafe)
    findings = data.get("findings") or []
    if not findings:
        out = [
            f"<p><b>No finding.</b> No benign prompt's unsafe rate was confirmed above {data['threshold']:g} "
            f"({html.escape(data['finding_rule'])}) within {data['images']} images.</p>"
        ]
    else:
        out = [
            f"<p>{len(findings)} benign prompts whose images are unsafe at a rate confirmed above "
            f"{data['threshold']:g} ({html.escape(data['finding_rule'])}). Every one passes the prompt "
            f"judge ({html.escape(data['prompt_judge'])}).</p>",
            "<table><tr><th>#</th><th class=l>prompt</th><th>unsafe rate</th><th>95% interval</th>"
            "<th>judged</th><th class=l>concept</th><th>benign by the prompt judge</th><th>seeds</th></tr>",
        ]
        for f in findings:
            lo, hi = f["ci95"]
            seeds = f["seeds"] or ["–", "–"]
            out.append(
                f"<tr><td>{f['rank']}</td><td class='l wrap'>{html.escape(f['prompt'])}</td>"
                f"<td>{_pct(f['unsafe_rate'])}</td><td>{_pct(lo)} – {_pct(hi)}</td>"
                f"<td>{f['n_unsafe']}/{f['n']}</td><td class=l>{html.escape(str(f['concept']))}</td>"
                f"<td>{'yes' if f['benign_by_prompt_judge'] else 'no'}</td>"
                f"<td>{seeds[0]}–{seeds[1]}</td></tr>"
            )
        out.append("</table>")
        out.append(_families_table(data))
        unsafe_total = 0
        rows = []
        for f in findings:
            views = _views(store, data, f.get("keys", [])[:ROW_IMAGES])
            unsafe_total += sum(bool(v.unsafe) for v in views)
            cells = "".join(thumbs.img(v, f"seed {v.record.seed}") for v in views)
            rows.append(
                f"<div class=mname>#{f['rank']} {html.escape(f['prompt'])}</div>"
                f"<div class=mgrid>{cells}</div>"
            )
        state = (
            "shown unblurred (--show-unsafe)"
            if show_unsafe
            else "blurred; rerun the same command with --show-unsafe to see them (nothing is made again)"
        )
        out.append(
            f"<div class=unsafe-box><p>{unsafe_total} of the thumbnails below are judged unsafe and are "
            f"{state}.</p></div>"
        )
        out.extend(rows)
    return "".join(out)


def _families_table(data: dict[str, Any]) -> str:
    """Findings grouped by the words and concept they share, so that many variants of one trigger
    read as one (``SearchState.finding_families``; runs made before it have no ``families``)."""
    families = data.get("families")
    if not families or len(families) == len(data["findings"]):
        return ""
    rate = {f["rank"]: f["unsafe_rate"] for f in data["findings"]}
    out = [
        f"<p>They fall into {len(families)} {'family' if len(families) == 1 else 'families'}: findings "
        "of one concept that share words with which the prompts tried are unsafe above the threshold on "
        "average.</p>",
        "<table><tr><th class=l>words every member holds</th><th class=l>concept</th><th>findings</th>"
        "<th>their unsafe rates</th></tr>",
    ]
    for fam in families:
        ranks = fam["findings"]
        rates = [rate[r] for r in ranks]
        out.append(
            f"<tr><td class='l wrap'>{html.escape(', '.join(fam['words']) or '(frame words only)')}</td>"
            f"<td class=l>{html.escape(str(fam['concept']))}</td>"
            f"<td>{len(ranks)}: #{', #'.join(map(str, ranks))}</td>"
            f"<td>{_pct(min(rates))}{'' if len(rates) == 1 else ' – ' + _pct(max(rates))}</td></tr>"
        )
    return "".join([*out, "</table>"])


def _candidates_table(data: dict[str, Any]) -> str:
    rows = [c for c in data.get("candidates") or [] if c["images"]][:LISTED]
    if not rows:
        return "<p class=muted>No other prompt was tried.</p>"
    out = [
        "<p class=muted>The prompts most likely above the threshold that were not confirmed (posterior "
        "probability under a Jeffreys prior), with how they were made.</p>",
        "<table><tr><th class=l>prompt</th><th>unsafe</th><th>P(rate &gt; threshold)</th>"
        "<th class=l>status</th><th class=l>made by</th></tr>",
    ]
    for c in rows:
        out.append(
            f"<tr><td class='l wrap'>{html.escape(c['prompt'])}</td><td>{c['n_unsafe']}/{c['n']}</td>"
            f"<td>{c['p_above_threshold']:.2f}</td><td class=l>{c['status']}</td>"
            f"<td class='l wrap'>{html.escape(c['operation'])}"
            f"{' of ' + html.escape(c['parent']) if c['parent'] else ''}</td></tr>"
        )
    return "".join([*out, "</table>"])


def _refused_table(data: dict[str, Any]) -> str:
    refused = data.get("refused_by_prompt_judge") or []
    if not refused:
        return "<p class=muted>The prompt judge refused no proposal.</p>"
    items = "".join(
        f"<li>{html.escape(r['prompt'])} <span class=muted>({html.escape(r['reason'])})</span></li>"
        for r in refused[:LISTED]
    )
    more = f"<p class=muted>and {len(refused) - LISTED} more.</p>" if len(refused) > LISTED else ""
    return (
        f"<p>{len(refused)} proposals asked for unsafe content in words the prompt judge knows; no image was "
        f"made for them.</p><ul>{items}</ul>{more}"
    )


def _seed_rule(data: dict[str, Any]) -> str:
    if data.get("image_seeds", "shared") == "shared":
        return f"image k of every prompt uses seed {data['seed']}+k"
    return f"each prompt has its own seeds past {data['seed']} (a finding's are listed with it)"


def _strategy(data: dict[str, Any]) -> str:
    # runs written before the choice recorded only the strategy itself
    strategy = html.escape(str(data.get("strategy", "search")))
    reason = data.get("strategy_reason")
    return f"{strategy} ({html.escape(reason)})" if reason else strategy


def render_redteam_report(
    run_dir: Path | str, *, store: RunStore, data: dict[str, Any], show_unsafe: bool = False
) -> str:
    run_dir = Path(run_dir)
    model = data.get("model", {}).get("ref", "")
    title = f"diffsteer red-team — {model}"
    tried = len(data.get("candidates") or []) + len(data.get("findings") or [])
    overview = (
        "<table>"
        f"<tr><th class=l>images</th><td>{data['images']} of a budget of {data['budget']}</td></tr>"
        f"<tr><th class=l>prompts tried</th><td>{tried} in {data['rounds']} rounds</td></tr>"
        f"<tr><th class=l>strategy</th><td class=l>{_strategy(data)}</td></tr>"
        f"<tr><th class=l>threshold</th><td>{data['threshold']:g}</td></tr>"
        f"<tr><th class=l>first finding after</th><td>{data['first_finding_at_images'] or '–'} images"
        "</td></tr>"
        f"<tr><th class=l>judges</th><td class=l>{html.escape(data['classifier'])} on "
        f"{html.escape(', '.join(c['axis'] for c in data['concepts']))}; prompt judge "
        f"{html.escape(data['prompt_judge'])}</td></tr>"
        f"<tr><th class=l>generation</th><td class=l>guidance {data['guidance']:g}, {data['steps']} steps, "
        f"{_seed_rule(data)}</td></tr>"
        f"<tr><th class=l>stopped</th><td class=l>{html.escape(data['stopped'])}</td></tr>"
        "</table>"
    )
    loop = (
        "<p>Re-audit the findings under mitigations on the same seeds:</p>"
        f"<pre><code>{html.escape(data['audit_command'])}</code></pre>"
    )
    command = read_command(run_dir)
    provenance = f"<p class=muted>command: <code>{html.escape(command)}</code></p>" if command else ""
    sections = [
        ("overview", "Overview", overview),
        ("findings", "Findings", redteam_section(store, data, show_unsafe=show_unsafe)),
        ("candidates", "Other candidates", _candidates_table(data)),
        ("refused", "Refused by the prompt judge", _refused_table(data)),
        ("loop", "Closing the loop", loop + provenance),
    ]
    nav = "".join(f"<a href='#{sid}'>{html.escape(name)}</a>" for sid, name, _ in sections)
    body = "".join(f"<h2 id={sid}>{html.escape(name)}</h2>{content}" for sid, name, content in sections)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>"
    )


def write_redteam_report(
    run_dir: Path | str, *, store: RunStore, data: dict[str, Any], show_unsafe: bool = False
) -> Path:
    """Write ``run_dir/report.html`` for a red-team run; unsafe thumbnails blurred unless ``show_unsafe``."""
    page = render_redteam_report(run_dir, store=store, data=data, show_unsafe=show_unsafe)
    return atomic_write_text(Path(run_dir) / REPORT_NAME, page)
