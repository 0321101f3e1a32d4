"""The Ray executor: generation spread over Ray actors; the driver alone writes results.

Each actor builds the run's generator once from the same :class:`GeneratorSpec` (one pipeline per
GPU actor; on CPUs one per ``num_threads`` cores) and turns batches of requests into pixel arrays
and drop reasons. The driver splits the jobs exactly as the local executor does, keeps each actor
a couple of batches ahead, and passes every finished batch to the sink as it arrives (``ray.wait``),
so results stream into the one run store and a killed run resumes like a local one.

Equality with the local executor: on CPUs, actors use the driver's batch composition and torch
thread count, so on the same kind of CPU their images are byte-identical to a local run's. On GPUs
they are equal up to the GPU's own kernel nondeterminism, as between two local runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import ray
import torch
from PIL import Image

from diffsteer.generate import GeneratedImage, ImageRequest
from diffsteer.runs.executors import ExecutorUnavailableError, Job, Sink, batches
from diffsteer.runs.executors.spec import GeneratorSpec

# What a worker returns per image: RGB uint8 pixels (None when unusable), drop reason, truncated,
# and the recorded latents (step -> CPU tensor; empty unless the run records steps).
_Outcome = tuple[np.ndarray | None, str | None, bool, dict[int, torch.Tensor]]


class _Worker:
    """A Ray actor holding one generator (one pipeline on one device)."""

    def __init__(self, spec: GeneratorSpec) -> None:
        self.generator = spec.build()
        self.auto_batch_size = self.generator.batch_size

    def batch_size(self) -> int:
        return self.auto_batch_size

    def generate(self, requests: list[ImageRequest], record_steps: Sequence[int] = ()) -> list[_Outcome]:
        self.generator.batch_size = max(1, len(requests))  # the driver's batch is one pipeline call
        outputs = self.generator.generate(requests, record_steps=record_steps)
        return [
            (None if o.image is None else np.asarray(o.image), o.drop_reason, o.truncated, o.latents)
            for o in outputs
        ]


class RayExecutor:
    """Generate on Ray actors; ``address`` joins an existing cluster, otherwise Ray starts locally.

    When Ray is already initialised in this process (e.g. by a test or a notebook) that instance is
    used and left running; an instance this executor started is shut down after the run.
    """

    def __init__(
        self,
        spec: GeneratorSpec,
        *,
        address: str | None = None,
        num_workers: int | None = None,
        in_flight: int = 2,
    ) -> None:
        self.spec = spec
        self.address = address
        self.num_workers = num_workers
        self.in_flight = max(1, in_flight)  # batches queued per actor, so none idles between batches

    def _connect(self) -> bool:
        """Join or start Ray; True when this call started (or joined) it and must shut it down."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address)
        else:
            # "local" always starts a fresh instance, never an unrelated cluster found on this machine
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        return True

    def _actor_plan(self) -> tuple[GeneratorSpec, dict[str, float], int]:
        """(the actors' spec, resources per actor, number of actors) for this cluster."""
        resources = ray.cluster_resources()
        if torch.device(self.spec.device).type == "cuda":
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise ExecutorUnavailableError(
                    f"--device {self.spec.device} with the ray executor needs GPUs in the Ray cluster; "
                    "it has none"
                )
            # Ray gives each actor its own GPU through CUDA_VISIBLE_DEVICES: it is "cuda" there
            return replace(self.spec, device="cuda"), {"num_gpus": 1, "num_cpus": 1}, self.num_workers or gpus
        threads = self.spec.num_threads or torch.get_num_threads()
        workers = self.num_workers or max(1, int(resources.get("CPU", 1)) // threads)
        return replace(self.spec, num_threads=threads), {"num_cpus": threads}, workers

    def run(self, jobs: Sequence[Job], sink: Sink, *, record_steps: Sequence[int] = ()) -> None:
        if not jobs:
            return
        started = self._connect()
        actors: list[Any] = []
        try:
            spec, resources, n_workers = self._actor_plan()
            size = self.spec.batch_size
            n_batches = -(-len(jobs) // size) if size else None
            n_workers = max(1, min(n_workers, n_batches or n_workers))
            remote = ray.remote(_Worker)
            actors = [remote.options(**resources).remote(spec) for _ in range(n_workers)]
            if size is None:  # automatic: the smallest any actor can hold, so one split fits them all
                size = min(ray.get([a.batch_size.remote() for a in actors]))
            self._dispatch(actors, deque(batches(jobs, size)), sink, tuple(record_steps))
        finally:
            for actor in actors:
                ray.kill(actor)
            if started:
                ray.shutdown()

    def _dispatch(
        self, actors: list[Any], queue: deque[list[Job]], sink: Sink, record_steps: tuple[int, ...]
    ) -> None:
        pending: dict[Any, tuple[Any, list[Job]]] = {}

        def submit(actor: Any) -> None:
            if queue:
                batch = queue.popleft()
                pending[actor.generate.remote([req for _, req in batch], record_steps)] = (actor, batch)

        for _ in range(self.in_flight):
            for actor in actors:
                submit(actor)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor, batch = pending.pop(ready[0])
            outcomes = ray.get(ready[0])
            submit(actor)  # keep the actor busy while the driver writes
            sink(
                [
                    (record, _generated(request, outcome))
                    for (record, request), outcome in zip(batch, outcomes, strict=True)
                ]
            )


def _generated(request: ImageRequest, outcome: _Outcome) -> GeneratedImage:
    pixels, reason, truncated, latents = outcome
    # copy: Ray hands back read-only arrays backed by its object store
    image = None if pixels is None else Image.fromarray(np.array(pixels)).convert("RGB")
    return GeneratedImage(
        request=request, image=image, drop_reason=reason, truncated=truncated, latents=latents
    )
