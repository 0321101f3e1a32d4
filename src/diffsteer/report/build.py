"""Rebuild a run's report from its store and summary.json (``diffsteer report RUN_DIR``).

Sections summary.json lacks (runs made before they existed) are computed from the store; a new
``reference`` re-checks the auditor. The ``results`` rows are never recomputed: they are the audit's.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffsteer.report.html import write_report
from diffsteer.runs.atomic import atomic_write_text
from diffsteer.runs.store import RunStore

__all__ = ["SUMMARY_NAME", "build_report", "write_summary"]

SUMMARY_NAME = (
    "summary.json"  # the same name as diffsteer.audit.SUMMARY_NAME (not imported: audit loads torch)
)


def write_summary(run_dir: Path | str, summary: dict) -> Path:
    """Write summary.json atomically (a crash never leaves half a file)."""
    return atomic_write_text(Path(run_dir) / SUMMARY_NAME, json.dumps(summary, indent=2, allow_nan=False))


def build_report(
    run_dir: Path | str,
    *,
    reference: str | Path | None = None,
    refresh: bool = False,
    device: str = "cpu",
    show_unsafe: bool = False,
) -> Path:
    """Write ``run_dir/report.html`` again; returns its path.

    ``reference``: a labelled folder (see :mod:`diffsteer.reference`) or ``"auto"`` to check the
    auditor again; ``refresh`` recomputes the quality and auditor sections even when present;
    ``show_unsafe`` shows the thumbnails that a judge calls unsafe unblurred.
    """
    from diffsteer.assess import AUTO, auditor_section, quality_section, resolve_reference, summary_axes
    from diffsteer.attributes import ClipZeroShotClassifier
    from diffsteer.provenance import collect_provenance

    run_dir = Path(run_dir)
    with RunStore.open_existing(run_dir) as store:
        path = run_dir / SUMMARY_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{run_dir} has no {SUMMARY_NAME}: the audit did not finish; run the same `diffsteer audit` "
                "command again to resume it"
            )
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(
                f"{path} is not valid JSON ({exc}); run the same `diffsteer audit` command to rewrite it"
            ) from None
        need_quality = refresh or "quality" not in summary
        need_auditor = refresh or reference is not None or "auditor" not in summary
        # Read the reference first: a bad labels.csv fails before any model is loaded.
        ref = (
            resolve_reference(AUTO if reference is None else reference, summary["config"]["model"])
            if need_auditor
            else None
        )
        changed = False
        if need_quality or need_auditor:
            classifier = ClipZeroShotClassifier.from_pretrained(summary["classifier"], device=device)
            mitigations = set(summary["config"]["mitigations"])
            planned = {r.key for r in store.images() if r.mitigation in mitigations}
            if need_quality:
                summary["quality"] = quality_section(store, summary, classifier, planned)
            if need_auditor:
                summary["auditor"] = (
                    auditor_section(summary, classifier, ref, summary_axes(summary)) if ref else None
                )
            changed = True
        if "provenance" not in summary:
            summary["provenance"] = collect_provenance(run_dir, device=device) | {
                "note": "recorded when the report was rebuilt, not when the images were made"
            }
            changed = True
        if "safety" not in summary:  # runs audited before unsafe rates existed
            from diffsteer.attributes.safety import safety_summary

            summary["safety"] = safety_summary(summary["results"])
            changed = True
        if changed:
            write_summary(run_dir, summary)
        return write_report(run_dir, store=store, summary=summary, show_unsafe=show_unsafe)
