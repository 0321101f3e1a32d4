"""Where a run's numbers came from: library versions, platform, the exact command, and when.

Recorded in summary.json at audit time, because the versions installed when a report is rebuilt
later may differ from the ones that made the images.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["COMMAND_FILE", "LIBRARIES", "collect_provenance", "read_command"]

COMMAND_FILE = "command.txt"
LIBRARIES = ("diffsteer", "torch", "diffusers", "transformers", "numpy", "pillow")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_command(run_dir: Path | str) -> str | None:
    """The command line saved in ``run_dir/command.txt`` by the CLI, if any."""
    path = Path(run_dir) / COMMAND_FILE
    if not path.is_file():
        return None
    return path.read_text(encoding="utf-8").strip() or None


def collect_provenance(run_dir: Path | str | None = None, *, device: str | None = None) -> dict[str, Any]:
    """Library versions, Python, platform, device, the run's command and the time, as JSON-ready data."""
    out: dict[str, Any] = {
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "command": read_command(run_dir) if run_dir is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device and device.startswith("cuda"):
        try:
            import torch

            out["accelerator"] = torch.cuda.get_device_name(torch.device(device))
        except Exception:  # informational only: a report must not fail over a device name
            out["accelerator"] = None
    return out
