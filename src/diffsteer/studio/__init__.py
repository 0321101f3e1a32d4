"""diffsteer studio: a local web page to choose what to steer and see the effect (``diffsteer studio``).

The logic (:mod:`.session`) needs no web framework; the page (:mod:`.app`) needs the ``studio``
extra (Gradio).
"""

from diffsteer.studio.session import (
    Comparison,
    FairOption,
    Shares,
    StudioEntry,
    StudioError,
    StudioSession,
)

__all__ = ["Comparison", "FairOption", "Shares", "StudioEntry", "StudioError", "StudioSession"]
