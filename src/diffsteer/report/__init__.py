"""The audit report: one self-contained HTML file (no network, images inlined as small PNGs)."""

from diffsteer.report.html import write_report

__all__ = ["write_report"]
