"""How pictoworld plugs into diffsteer: the entry point ``diffsteer.plugins`` names :func:`register`.

diffsteer calls it once, the first time its registry is used; nothing in diffsteer's core imports
pictoworld, so the bundled model is found exactly as a model shipped by another package would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffsteer import pictoworld

if TYPE_CHECKING:
    import typer

    from diffsteer.registry import Registry


def register(registry: Registry) -> None:
    """Register the model, its benchmark and the ``diffsteer pictoworld`` commands."""
    registry.register_model(
        pictoworld.NAME,
        pictoworld.pipeline_dir,
        classifier=pictoworld.clip_dir,
        guidance=pictoworld.RECOMMENDED_GUIDANCE,
        benchmark=pictoworld.NAME,
        reference=pictoworld.reference_set,
        steering_dir=pictoworld.steering_dir,
        captions=pictoworld.guard_captions,
    )
    registry.register_benchmark(pictoworld.NAME, pictoworld.load_benchmark)
    registry.register_commands(pictoworld.NAME, _commands)


def _commands() -> typer.Typer:
    from diffsteer.pictoworld.commands import app  # typer is imported only when the CLI asks

    return app
