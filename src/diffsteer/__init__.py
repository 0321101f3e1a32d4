"""diffsteer: audit text-to-image diffusion models for bias and unsafe output, and steer them.

The front door (see docs/python-api.md)::

    import diffsteer
    model = diffsteer.load("pictoworld")
    result = model.audit("runs/notebook", images_per_prompt=8)
    with diffsteer.steer(pipe, hspace="woman"):      # a user's own diffusers pipeline
        image = pipe("a photo of a doctor").images[0]

Names are imported on first use, so ``import diffsteer`` (and ``diffsteer --help``) stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load": "diffsteer.api",
    "Model": "diffsteer.api",
    "steer": "diffsteer.steering.attach",
    "PipelineSteering": "diffsteer.steering.attach",
    "AuditConfig": "diffsteer.audit",
    "AuditResult": "diffsteer.audit",
    "SteeringSpec": "diffsteer.steering.preset",
    "RunStore": "diffsteer.runs.store",
    "Summary": "diffsteer.summary",
    "load_summary": "diffsteer.summary",
}

__all__ = [
    "AuditConfig",
    "AuditResult",
    "Model",
    "PipelineSteering",
    "RunStore",
    "SteeringSpec",
    "Summary",
    "__version__",
    "load",
    "load_summary",
    "steer",
]

if TYPE_CHECKING:
    from diffsteer.api import Model, load
    from diffsteer.audit import AuditConfig, AuditResult
    from diffsteer.runs.store import RunStore
    from diffsteer.steering.attach import PipelineSteering, steer
    from diffsteer.steering.preset import SteeringSpec
    from diffsteer.summary import Summary, load_summary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'diffsteer' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
