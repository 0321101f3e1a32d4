"""What the acceptance experiments share: where their figures are recorded, and how they read scale lists.

The experiments record into the one measured history, ``benchmarks/RESULTS.md``, beside the
performance benchmarks' sections, so a figure quoted anywhere can be traced to a dated section there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS.md"


def scale_list(text: str) -> list[float]:
    """An argparse type: comma-separated non-negative numbers (guidance or rescale values)."""
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be at least 0")
    return values
