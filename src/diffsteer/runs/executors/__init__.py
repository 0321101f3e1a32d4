"""Executors: where a run's image jobs are generated (this process, or Ray workers).

An executor takes jobs, each ``(record, ImageRequest)``, and hands finished batches of
``(record, GeneratedImage)`` to a sink as soon as each batch is done, so a caller can write them to
its store and let them go: no executor ever holds all of a run's images. The record is opaque to
the executor (an audit passes its :class:`~diffsteer.runs.store.ImageRecord`); it only travels with its
image.

Both executors split the jobs the same way (:func:`batches`: consecutive runs of ``batch_size`` in
job order) and use the same CPU thread count, because the generator's images are bit-identical
only for the same batch composition and thread count (see ``SteeredGenerator.generate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from diffsteer.generate import GeneratedImage, ImageRequest
from diffsteer.runs.executors.spec import CPU_BATCH_SIZE, GeneratorSpec, auto_batch_size, batch_from_memory

__all__ = [
    "CPU_BATCH_SIZE",
    "EXECUTORS",
    "Executor",
    "ExecutorUnavailableError",
    "Finished",
    "GeneratorSpec",
    "Job",
    "Sink",
    "auto_batch_size",
    "batch_from_memory",
    "batches",
    "check_executor",
    "make_executor",
]

EXECUTORS = ("local", "ray")

Job = tuple[Any, ImageRequest]
Finished = tuple[Any, GeneratedImage]
Sink = Callable[[list[Finished]], None]


class ExecutorUnavailableError(RuntimeError):
    """The requested executor cannot run here (e.g. Ray is not installed)."""


class Executor(Protocol):
    """Generates jobs in batches and streams each finished batch into ``sink``.

    ``record_steps``: denoising steps whose latents each generated image carries (see
    ``SteeredGenerator.generate``)."""

    def run(self, jobs: Sequence[Job], sink: Sink, *, record_steps: Sequence[int] = ()) -> None: ...


def batches(jobs: Sequence[Job], size: int) -> Iterator[list[Job]]:
    """Consecutive batches of ``size`` jobs in job order: the one split every executor uses."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(jobs), size):
        yield list(jobs[start : start + size])


def check_executor(name: str) -> None:
    """Fail early (before any model is loaded) on an unknown executor or a missing Ray."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ExecutorUnavailableError(
                "the ray executor needs Ray: pip install 'diffsteer[ray]'"
            ) from None


def make_executor(
    name: str,
    spec: GeneratorSpec,
    *,
    generator: Any = None,
    ray_address: str | None = None,
) -> Executor:
    """The executor called ``name``: ``local`` reuses ``generator`` (built from ``spec`` when None)."""
    check_executor(name)
    if name == "local":
        from diffsteer.runs.executors.local import LocalExecutor

        return LocalExecutor(generator if generator is not None else spec.build())
    from diffsteer.runs.executors.ray import RayExecutor

    return RayExecutor(spec, address=ray_address)
