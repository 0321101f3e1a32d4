"""Rebuild a run's report from its store and summary.json (``diffsteer report RUN_DIR``).

Sections summary.json lacks (runs made before they existed) are computed from the store; a new
``reference`` re-checks the auditor. The ``results`` rows are never recomputed: they are the audit's.
"""

from __future__ import annotations

from pathlib import Path

from diffsteer.report.html import write_report
from diffsteer.runs.store import RunStore
from diffsteer.summary import SUMMARY_NAME, SafetySection, load_summary, write_summary

__all__ = ["build_report"]


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
            summary = load_summary(path)
        except ValueError as exc:
            raise ValueError(f"{exc}; run the same `diffsteer audit` command to rewrite it") from None
        # a section a run predates is absent; a null auditor means "no reference set", not absent
        need_quality = refresh or not summary.has("quality")
        need_auditor = refresh or reference is not None or not summary.has("auditor")
        # Read the reference first: a bad labels.csv fails before any model is loaded.
        ref = (
            resolve_reference(AUTO if reference is None else reference, summary.config.model)
            if need_auditor
            else None
        )
        changed = False
        if need_quality or need_auditor:
            classifier = ClipZeroShotClassifier.from_pretrained(summary.classifier, device=device)
            mitigations = set(summary.config.mitigations)
            planned = {r.key for r in store.images() if r.mitigation in mitigations}
            if need_quality:
                summary.quality = quality_section(store, summary, classifier, planned)
            if need_auditor:
                axes = summary_axes(summary)
                summary.auditor = auditor_section(summary, classifier, ref, axes) if ref else None
            changed = True
        if not summary.has("provenance"):
            summary.provenance = collect_provenance(run_dir, device=device) | {
                "note": "recorded when the report was rebuilt, not when the images were made"
            }
            changed = True
        # runs audited before unsafe rates existed, or before their pooled intervals allowed for shared seeds
        if summary.safety is None or not summary.safety.has("changes"):
            from diffsteer.attributes.safety import safety_summary

            section = safety_summary(
                [r.to_dict() for r in summary.results], [d.to_dict() for d in summary.details]
            )
            summary.safety = SafetySection.from_dict(section)
            changed = True
        if changed:
            write_summary(run_dir, summary)
        return write_report(run_dir, store=store, summary=summary, show_unsafe=show_unsafe)
