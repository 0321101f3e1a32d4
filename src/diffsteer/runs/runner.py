"""The one loop every long job runs: generate what the store lacks, then label what is unlabelled.

An audit, a strength sweep, a calibration and the learning of a steering file differ only in which
images they plan and what they compute from them. They all hand their planned jobs, each
``(ImageRecord, ImageRequest)``, to :func:`generate_missing`, which skips the keys the run store
already holds and streams every finished batch into the store, so a killed job resumes where it
stopped and any executor (this process, Ray workers) can make the images. :func:`label_missing`
then classifies exactly the stored images that have no label from the given classifier yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Sequence
from typing import Any

from diffsteer.generate import GeneratedImage, ImageRequest
from diffsteer.runs.executors import Executor
from diffsteer.runs.store import ImageRecord, LabelRecord, RunStore

__all__ = ["LABEL_BATCH", "Progress", "generate_missing", "label_missing"]

# stage, done, total
Progress = Callable[[str, int, int], None]

# Images classified per batch: large enough for CLIP's throughput, small enough to keep memory flat.
LABEL_BATCH = 256


def generate_missing(
    store: RunStore,
    jobs: Sequence[tuple[ImageRecord, ImageRequest]],
    executor: Executor,
    *,
    progress: Progress | None = None,
    stage: str = "generate",
    is_done: Callable[[ImageRecord], bool] | None = None,
    on_generated: Callable[[ImageRecord, GeneratedImage], None] | None = None,
    record_steps: Sequence[int] = (),
) -> int:
    """Generate every job whose key ``store`` does not hold yet; return how many were generated.

    Each finished batch is written to the store at once (a run never holds all its images), with
    ``status``, ``drop_reason`` and ``truncated`` taken from the generated image. ``is_done`` adds a
    condition to "the store has the key" (e.g. "and its recorded latents are on disk");
    ``on_generated`` sees each image before its row is committed (e.g. to save its latents first,
    so a committed row never lacks them). ``record_steps``: denoising steps whose latents each
    :class:`GeneratedImage` should carry.
    """
    report = progress or (lambda *_: None)
    done = store.done_keys()
    todo = [job for job in jobs if job[0].key not in done or (is_done is not None and not is_done(job[0]))]
    already = len(jobs) - len(todo)
    report(stage, already, len(jobs))
    generated = 0

    def sink(finished: list[tuple[ImageRecord, GeneratedImage]]) -> None:
        nonlocal generated
        items = []
        for record, out in finished:
            if on_generated is not None:
                on_generated(record, out)
            status = "ok" if out.drop_reason is None else "dropped"
            row = dataclasses.replace(
                record, status=status, drop_reason=out.drop_reason, truncated=out.truncated
            )
            items.append((row, out.image))
        store.add_images(items)
        generated += len(finished)
        report(stage, already + generated, len(jobs))

    if todo:
        executor.run(todo, sink, record_steps=record_steps)
    return generated


def label_missing(
    store: RunStore,
    classifier_id: str,
    axes: Sequence[Any],
    load_classifier: Callable[[], Any],
    *,
    keys: Collection[str] | None = None,
    progress: Progress | None = None,
    stage: str = "classify",
) -> int:
    """Label every usable stored image (of ``keys``, if given) that lacks a label on one of ``axes``.

    ``axes`` are :class:`~diffsteer.attributes.Axis` objects; ``load_classifier`` is called only when
    there is something to label (loading CLIP is the slow part of a resumed run), and must return an
    object with ``classify(images, axes)`` whose results carry ``drop_reason`` and ``axes[name]``.
    Labels are written per batch, so an interrupted labelling resumes too, with the same numbers.
    Returns the number of images labelled.
    """
    report = progress or (lambda *_: None)
    names = [axis.name for axis in axes]
    missing = set(store.unlabelled_keys(classifier_id, names))
    if keys is not None:
        keys = set(keys)
        missing &= keys
    if not missing:
        return 0
    # Batches are fixed slices of every usable image of the job in the store's order, and a batch
    # with any label missing is classified whole: a classifier's floats on a CPU depend on the batch
    # it ran in, so a resumed run labels exactly as an uninterrupted one, byte for byte.
    ordered = [r for r in store.images(status="ok") if keys is None or r.key in keys]
    classifier = load_classifier()
    done = 0
    for start in range(0, len(ordered), LABEL_BATCH):
        chunk = ordered[start : start + LABEL_BATCH]
        if missing.isdisjoint(record.key for record in chunk):
            continue
        results = classifier.classify([store.load_image(record) for record in chunk], axes)
        labels = []
        for record, result in zip(chunk, results, strict=True):
            if record.key not in missing:
                continue
            for name in names:
                if result.drop_reason is not None:
                    labels.append(LabelRecord(record.key, classifier_id, name, None, {}, result.drop_reason))
                else:
                    label = result.axes[name]
                    labels.append(LabelRecord(record.key, classifier_id, name, label.label, label.probs))
        store.add_labels(labels)
        done += len({label.key for label in labels})
        report(stage, done, len(missing))
    return len(missing)
