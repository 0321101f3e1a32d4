"""The shared job runner: what every long job (audit, sweep, learn) relies on to resume and to scale."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from diffsteer.generate import ImageRequest, SteeredGenerator
from diffsteer.runs.executors.local import LocalExecutor
from diffsteer.runs.runner import generate_missing, label_missing
from diffsteer.runs.store import ImageRecord, RunStore, job_key
from diffsteer.testing import tiny_sd_pipeline


@pytest.fixture(scope="module")
def generator():
    return SteeredGenerator(tiny_sd_pipeline("sd1"), steps=2, guidance=1.0, batch_size=2)


def _jobs(n: int, prompt: str = "a photo of a doctor") -> list[tuple[ImageRecord, ImageRequest]]:
    jobs = []
    for k in range(n):
        key = job_key(prompt=prompt, seed=k)
        record = ImageRecord(
            key=key, mitigation="none", prompt_id="p", prompt=prompt, final_prompt=prompt,
            seed=k, image_index=k, steering={}, model="tiny", status="ok",
        )  # fmt: skip
        jobs.append((record, ImageRequest(prompt, seed=k)))
    return jobs


class _CountingExecutor(LocalExecutor):
    """The local executor, counting the images it was asked to make."""

    made = 0

    def run(self, jobs, sink, *, record_steps=()):
        type(self).made += len(jobs)
        super().run(jobs, sink, record_steps=record_steps)


def test_a_rerun_generates_nothing_and_a_larger_plan_only_the_new_images(tmp_path, generator):
    executor = _CountingExecutor(generator)
    stages = []
    with RunStore.open(tmp_path, {"kind": "test"}) as store:
        assert generate_missing(store, _jobs(3), executor, progress=lambda *a: stages.append(a)) == 3
    assert stages[0] == ("generate", 0, 3) and stages[-1] == ("generate", 3, 3)
    with RunStore.open(tmp_path, {"kind": "test"}) as store:
        assert generate_missing(store, _jobs(3), executor) == 0
        assert generate_missing(store, _jobs(5), executor) == 2
        assert len(store.images(status="ok")) == 5
    assert _CountingExecutor.made == 5


def test_is_done_regenerates_and_on_generated_sees_each_image_before_its_row(tmp_path, generator):
    seen_before_commit = []
    with RunStore.open(tmp_path, {"kind": "test"}) as store:

        def saw(record, out):
            seen_before_commit.append((record.key, record.key in store.done_keys(), out.image is not None))

        generate_missing(store, _jobs(2), LocalExecutor(generator), on_generated=saw)
        assert [flag for _, flag, _ in seen_before_commit] == [False, False]
        assert all(has_image for _, _, has_image in seen_before_commit)
        # the caller's own condition (e.g. "its latents are on disk") fails for image 1: only it is made again
        again = generate_missing(
            store, _jobs(2), LocalExecutor(generator), is_done=lambda record: record.seed != 1
        )
        assert again == 1


def test_recorded_latents_reach_the_caller(tmp_path, generator):
    latents = {}
    with RunStore.open(tmp_path, {"kind": "test"}) as store:
        generate_missing(
            store,
            _jobs(2),
            LocalExecutor(generator),
            record_steps=(0, 1),
            on_generated=lambda record, out: latents.update({record.seed: out.latents}),
        )
    assert sorted(latents) == [0, 1]
    assert sorted(latents[0]) == [0, 1]
    assert latents[0][1].shape == generator.latent_shape


class _Classifier:
    """A stand-in classifier: 'light' for bright images, 'dark' otherwise."""

    def classify(self, images, axes):
        out = []
        for image in images:
            label = "light" if np.asarray(image).mean() > 127 else "dark"
            probs = {"light": float(label == "light"), "dark": float(label == "dark")}
            out.append(
                SimpleNamespace(
                    drop_reason=None,
                    axes={axis.name: SimpleNamespace(label=label, probs=probs) for axis in axes},
                )
            )
        return out


def test_label_missing_labels_once_and_loads_no_classifier_when_nothing_is_missing(tmp_path, generator):
    axes = [SimpleNamespace(name="skin_tone")]
    loads = []

    def load():
        loads.append(1)
        return _Classifier()

    with RunStore.open(tmp_path, {"kind": "test"}) as store:
        generate_missing(store, _jobs(4), LocalExecutor(generator))
        keys = {record.key for record, _ in _jobs(3)}  # only the planned images of this job
        assert label_missing(store, "stand-in", axes, load, keys=keys) == 3
        assert label_missing(store, "stand-in", axes, load, keys=keys) == 0
        assert len(loads) == 1
        labels = store.labels("stand-in")
        assert {lab.key for lab in labels} == keys
        assert {lab.label for lab in labels} <= {"light", "dark"}
