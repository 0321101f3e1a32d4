"""The local executor: generate in this process, one batch at a time, each batch straight to the sink."""

from __future__ import annotations

from collections.abc import Sequence

from diffsteer.generate import SteeredGenerator
from diffsteer.runs.executors import Job, Sink, batches


class LocalExecutor:
    """Runs a :class:`SteeredGenerator` batch by batch; memory holds one batch of images at a time."""

    def __init__(self, generator: SteeredGenerator) -> None:
        self.generator = generator

    @property
    def batch_size(self) -> int:
        return self.generator.batch_size

    def run(self, jobs: Sequence[Job], sink: Sink, *, record_steps: Sequence[int] = ()) -> None:
        for batch in batches(jobs, self.generator.batch_size):
            outputs = self.generator.generate([request for _, request in batch], record_steps=record_steps)
            sink([(record, out) for (record, _), out in zip(batch, outputs, strict=True)])
