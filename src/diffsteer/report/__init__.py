"""The audit report: one self-contained HTML file (no network, no script, images inlined).

``write_report`` renders it from a summary and the run store; ``build_report`` rebuilds it from a
run folder. Modules: ``html`` (page), ``tables``, ``plots`` (matplotlib to inline SVG), ``grids``
(image thumbnails), ``build`` (rebuild from the store).
"""

from diffsteer.report.build import build_report
from diffsteer.report.html import REPORT_NAME, write_report

__all__ = ["REPORT_NAME", "build_report", "write_report"]
