"""The fair-mixture weight rule: what it recommends, and a calibration run end to end on a tiny model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from diffsteer.attributes import ClipZeroShotClassifier
from diffsteer.experiments.calibrate import calibrate_noise_weight, fair_mixture_shares, recommend_fair_weight
from diffsteer.generate import SteeredGenerator
from diffsteer.models import load_pipeline, model_fingerprint
from diffsteer.steering.noise import NoiseDirection, load_noise_direction

UNIFORM = {"woman": 0.5, "man": 0.5}


def _sweep(weights, woman, n=None):
    return {
        "weights": weights,
        "shares": {"woman": woman, "man": [1 - v for v in woman]},
        "n": n or [32] * len(weights),
    }


def test_a_class_reaching_half_is_not_yet_a_fair_mixture():
    # a doctor prompt skewed to men: the woman direction brings women to 0.6 at w=2 while the man
    # direction keeps (almost) every image a man, so the half-and-half mixture is still 0.3 women
    sweeps = {
        "woman": _sweep([0, 2, 4, 6], [0.1, 0.6, 0.9, 1.0]),
        "man": _sweep([0, 2, 4, 6], [0.1, 0.0, 0.0, 0.0]),
    }
    mixture = fair_mixture_shares(sweeps, UNIFORM)
    assert mixture[2.0]["woman"] == pytest.approx(0.3)
    assert mixture[4.0]["woman"] == pytest.approx(0.45) and mixture[4.0]["man"] == pytest.approx(0.55)
    assert recommend_fair_weight(mixture, UNIFORM) == 4.0
    assert recommend_fair_weight(mixture, UNIFORM, tolerance=0.01) == 6.0
    assert recommend_fair_weight({w: m for w, m in mixture.items() if w < 6}, UNIFORM, tolerance=0.01) is None
    # a non-uniform target weights the directions: 80% of the images pushed toward women
    skewed = {"woman": 0.8, "man": 0.2}
    assert fair_mixture_shares(sweeps, skewed)[6.0]["woman"] == pytest.approx(0.8)


def test_weights_with_unclassified_images_are_left_out_and_missing_classes_refused():
    sweeps = {
        "woman": _sweep([0, 2, 4], [0.1, 0.6, 0.9], n=[32, 0, 32]),
        "man": _sweep([0, 2, 4], [0.1, 0.0, 0.0]),
    }
    assert sorted(fair_mixture_shares(sweeps, UNIFORM)) == [0.0, 4.0]
    with pytest.raises(ValueError, match="no sweep for class man"):
        fair_mixture_shares({"woman": sweeps["woman"]}, UNIFORM)


class _EveryImageCounted(ClipZeroShotClassifier):
    """The tiny random CLIP sees no person and is always uncertain; make it pick a class for every image."""

    def classify(self, images, axes, *, person_filter=True):
        decided = [dataclasses.replace(a, uncertain_prompt=None) for a in axes]
        return super().classify(images, decided, person_filter=False)


@pytest.fixture(scope="module")
def axis_directions(tiny_model_dirs):
    pipe = load_pipeline(str(tiny_model_dirs["sd1"]))
    shape = SteeredGenerator(pipe).latent_shape
    v = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    meta = {"fingerprint": model_fingerprint(pipe), "base_model": "tiny", "axis": "gender"}
    return pipe, [NoiseDirection("woman", v, dict(meta)), NoiseDirection("man", -v, dict(meta))]


def test_calibration_sweeps_every_class_on_every_prompt_and_stores_the_weight(
    axis_directions, tiny_model_dirs, tmp_path
):
    pipe, directions = axis_directions
    clip = _EveryImageCounted.from_pretrained(str(tiny_model_dirs["clip"]))
    prompts = ["a photo of a doctor", "a photo of a nurse"]
    record = calibrate_noise_weight(
        directions, prompts, out_dir=tmp_path, model="tiny", pipe=pipe, weights=[2, 8], n=2, steps=2,
        classifier=clip, batch_size=4,
    )  # fmt: skip
    assert [p["prompt"] for p in record["prompts"]] == prompts
    for p in record["prompts"]:
        assert p["weights"] == [0.0, 2.0, 8.0]
        shares = p["mixture_share"]
        assert all(abs(w + m - 1) < 1e-6 for w, m in zip(shares["woman"], shares["man"], strict=True))
    fair = [p["fair_weight"] for p in record["prompts"]]
    expected = max(fair) if None not in fair else 8.0
    assert record["recommended_weight"] == expected and record["reached"] == (None not in fair)
    on_disk = json.loads((tmp_path / "calibration.json").read_text())
    assert on_disk["recommended_weight"] == expected
    assert (tmp_path / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    # the weight travels with the files
    saved = load_noise_direction(directions[1].save(tmp_path / "dirs"))
    assert saved.recommended_weight == expected
    assert saved.metadata["weight_calibration"]["prompts"][0]["prompt"] == prompts[0]


def test_calibration_refuses_directions_of_no_axis_or_one_class(axis_directions, tmp_path):
    pipe, directions = axis_directions
    with pytest.raises(ValueError, match="at least two classes"):
        calibrate_noise_weight(directions[:1], ["a photo"], out_dir=tmp_path, pipe=pipe)
    loose = [NoiseDirection(d.concept, d.direction, {}) for d in directions]
    with pytest.raises(ValueError, match="one named axis"):
        calibrate_noise_weight(loose, ["a photo"], out_dir=tmp_path, pipe=pipe)
    names = ("female", "male")
    odd = [NoiseDirection(n, d.direction, dict(d.metadata)) for n, d in zip(names, directions, strict=True)]
    with pytest.raises(ValueError, match="not a class of axis 'gender'"):
        calibrate_noise_weight(odd, ["a photo"], out_dir=tmp_path, pipe=pipe)
    with pytest.raises(ValueError, match="calibration prompt"):
        calibrate_noise_weight(directions, [" "], out_dir=tmp_path, pipe=pipe)
