"""Initial-noise latent directions: fit them with a linear classifier, save them, and size them.

The method of "Latent Directions: A Simple Pathway to Bias Mitigation in Generative AI" (Lopez Olmos
et al., 2024): generate images from one prompt per class ("a photo of a woman", "a photo of a man"),
record the latents during denoising, fit a linear SVM per recorded step on a held-out split, and keep
the unit normal ``d`` of the separating hyperplane. At generation only the initial noise changes,
``z_T <- z_T + w * d``; the prompt and its embeddings stay as written. Several directions combine by
adding their offsets.

Weight rule (why ``w`` carries across models): ``w`` is measured in **standard deviations of the
initial noise along d**. The initial noise is ``z ~ N(0, I_D)`` and ``d`` has unit norm, so the
projection ``<z, d>`` is ``N(0, 1)`` whatever the latent size ``D``; adding ``w * d`` moves it to
``N(w, 1)``. A weight therefore says "how many noise standard deviations to push along the concept",
which means the same thing on an 8x8x4 latent (pictoworld) as on SDXL's 128x128x4; the rest of the
noise, and so the noise norm (``sqrt(D + w^2)`` instead of ``sqrt(D)``), is barely touched on large
latents. The alternative, a fraction of the noise norm ``sqrt(D)``, would push 16 times harder in
these units on SDXL (``sqrt(65536) = 256``) than on pictoworld (``sqrt(256) = 16``) for the same
number, although the classifier score the model responds to only sees the projection. The paper's
``w = 10`` on SDXL is 10 in these units. The recommended weight stored with a direction is measured
with the strength sweep (:mod:`diffsteer.experiments.sweep`), never assumed; the equivalent fraction
of the noise norm is stored alongside for reference.

Sign convention: with two classes the first class is the SVM's positive class and gets ``+d``, the
other ``-d``; with more classes each class gets its own one-vs-rest direction.

This module is the method (:func:`fit_noise_directions` on recorded latents) and the file format;
:func:`diffsteer.experiments.learn.learn_noise_directions` makes the images and their latents through
the run store and the shared runner.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from diffsteer.steering.files import (
    SteeringFileError,
    check_model,
    check_shape,
    meta_json,
    read_steering_file,
    save_steering_file,
    steering_filename,
)
from diffsteer.steering.method import add_offset, record_calibration, stored_strength, tensor_digest

KIND = "noise"
WEIGHT_UNIT = "noise_sd"
"""Weights are in standard deviations of the initial noise along the (unit) direction."""
DEFAULT_RECORD_STEPS = (0, 5, 10, 15)  # the paper records every 5 steps
ACCURACY_GOAL = 0.9  # the earliest recorded step reaching this held-out accuracy is chosen
TRAIN_FRACTION = 0.6  # the paper's 60/40 split
DEFAULT_SVM_C = 0.001  # strong regularisation: the normal nears the class-mean difference, less noisy
DEFAULT_WEIGHT = 8.0
"""Recommended weight written when the learner is given none: the larger of the weights measured by
strength sweeps on the first pictoworld weights (6 for gender, 8 for skin tone; benchmarks/RESULTS.md,
"noise directions"), close to the paper's 10 on SDXL in the same units. The bundled v2 needs 2 and 4,
so a model's own weight differs: measure it with a sweep."""

Progress = Callable[[str, int, int], None]


def norm_fraction(weight: float, latent_shape: Sequence[int]) -> float:
    """The weight expressed as a fraction of the initial noise norm ``sqrt(D)`` (for reference only)."""
    return float(weight) / math.sqrt(math.prod(int(s) for s in latent_shape))


@dataclass
class NoiseDirection:
    """A unit direction in initial-noise space that pushes generation toward ``concept``.

    ``direction`` has the generator's latent shape (C, H, W) and unit L2 norm; ``directions`` holds
    one unit direction per recorded step (``metadata["record_steps"]`` order), the chosen one among them.
    """

    kind: ClassVar[str] = KIND
    strength_unit: ClassVar[str] = WEIGHT_UNIT
    calibration_strengths: ClassVar[tuple[float, ...]] = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12)

    concept: str
    direction: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)
    directions: torch.Tensor | None = None

    @classmethod
    def load(cls, path: Path | str) -> NoiseDirection:
        return load_noise_direction(path)

    def __post_init__(self) -> None:
        self.direction = self.direction.detach().to("cpu", torch.float32)
        norm = float(self.direction.norm())
        if not math.isfinite(norm) or abs(norm - 1.0) > 1e-3:
            raise ValueError(f"noise direction '{self.concept}' must have unit norm, got {norm:.4g}")

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.direction.shape)

    @property
    def axis(self) -> str | None:
        return self.metadata.get("axis") or None

    @property
    def class_name(self) -> str | None:
        return self.metadata.get("class_name") or None

    @property
    def recommended_weight(self) -> float:
        if "recommended_weight" not in self.metadata and self.metadata.get("no_weight_reason"):
            why = self.metadata["no_weight_reason"]
            raise ValueError(
                f"noise direction '{self.concept}' has no recommended weight ({why}); "
                f"give one explicitly, e.g. {self.concept}:4"
            )
        return stored_strength(self.metadata, DEFAULT_WEIGHT)

    @property
    def default_strength(self) -> float:
        return self.recommended_weight

    def apply(self, request: Any, strength: float | None = None) -> Any:
        """``request`` with ``strength * d`` added to its initial-noise offset (recommended when None)."""
        return replace(request, noise_offset=add_offset(request.noise_offset, self.offset(strength)))

    def digest(self) -> str:
        return tensor_digest(self.direction)

    def set_default_strength(self, strength: float, *, rule: str, record: Mapping[str, Any]) -> None:
        record_calibration(self.metadata, strength, rule, record)
        self.metadata["norm_fraction"] = round(norm_fraction(strength, self.latent_shape), 5)

    def offset(self, weight: float | None = None) -> torch.Tensor:
        """What to add to the unit-variance initial noise: ``weight * d`` (the recommended weight if None).

        Since ``d`` has unit norm, the noise's projection on ``d`` moves by exactly ``weight`` standard
        deviations on any latent size (see the module docstring); a negative weight pushes away.
        """
        w = self.recommended_weight if weight is None else float(weight)
        if not math.isfinite(w):
            raise ValueError(f"noise weight must be finite, got {weight}")
        return w * self.direction

    def check_compatible(self, generator: Any, fingerprint: str, *, source: str | None = None) -> None:
        """Refuse a direction made for another U-Net or latent size (SteeringMismatchError)."""
        where = source or f"noise direction '{self.concept}'"
        check_model({k: str(v) for k, v in self.metadata.items()}, fingerprint=fingerprint, source=where)
        check_shape(self.direction, tuple(generator.latent_shape), source=where, what="noise direction")

    def save(self, directory: Path | str) -> Path:
        """Write ``<directory>/<concept>.noise.safetensors`` (tensors ``direction`` and ``directions``)."""
        path = Path(directory) / steering_filename(self.concept, KIND)
        tensors = {"direction": self.direction}
        if self.directions is not None:
            tensors["directions"] = self.directions.detach().to("cpu", torch.float32)
        meta = dict(self.metadata)
        meta.update(diffsteer_kind=KIND, concept=self.concept, latent_shape=list(self.latent_shape))
        return save_steering_file(path, tensors, meta)


# metadata keys stored as JSON and decoded on load
_JSON_KEYS = (
    "latent_shape",
    "classes",
    "record_steps",
    "heldout_accuracy",
    "recommended_weight",
    "norm_fraction",
    "step",
    "recipe",
    "seconds",
    "weight_sweep",  # files calibrated before the fair-mixture rule
    "weight_calibration",
)


def load_noise_direction(path: Path | str) -> NoiseDirection:
    """Read a ``.noise.safetensors`` file; SteeringFileError when it is not a valid noise direction."""
    tensors, raw = read_steering_file(path)
    if raw.get("diffsteer_kind") != KIND:
        raise SteeringFileError(
            f"{path} holds a '{raw.get('diffsteer_kind')}' steering file, not a noise direction"
        )
    direction = tensors.get("direction")
    if direction is None or direction.ndim != 3:
        raise SteeringFileError(f"{path} has no (C, H, W) tensor 'direction'")
    if not torch.isfinite(direction).all():
        raise SteeringFileError(f"{path}: direction has non-finite values")
    metadata: dict[str, Any] = {k: v for k, v in raw.items() if k not in _JSON_KEYS}
    for key in _JSON_KEYS:
        if key in raw:
            metadata[key] = meta_json(raw, key)
    directions = tensors.get("directions")
    if directions is not None and tuple(directions.shape[1:]) != tuple(direction.shape):
        raise SteeringFileError(
            f"{path}: 'directions' shape {tuple(directions.shape)} does not match 'direction'"
        )
    concept = raw.get("concept") or Path(path).name.split(".")[0]
    try:
        return NoiseDirection(concept, direction.float(), metadata, directions)
    except ValueError as exc:
        raise SteeringFileError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- learning


@dataclass
class StepFit:
    """One linear classifier on one recorded step: its unit normal and held-out accuracy."""

    step: int
    direction: np.ndarray  # flattened, unit norm, pointing to the positive class
    accuracy: float


def split_by_seed(seeds: Sequence[int], train_fraction: float = TRAIN_FRACTION, seed: int = 0) -> set[int]:
    """The seeds in the training part of a seeded split.

    Every class is generated from the same seeds, so splitting by seed keeps an image's noise out of
    the test set whenever the same noise (under another class prompt) was trained on, and gives every
    class the same share in each part (a stratified split by construction).
    """
    unique = sorted(set(int(s) for s in seeds))
    order = np.random.default_rng(seed).permutation(len(unique))
    n_train = max(1, min(len(unique) - 1, round(train_fraction * len(unique))))
    return {unique[i] for i in order[:n_train]}


def fit_direction(
    features: np.ndarray,
    positive: np.ndarray,
    train: np.ndarray,
    *,
    c: float = DEFAULT_SVM_C,
    step: int = 0,
) -> StepFit:
    """Fit a linear SVM (positive vs rest) on ``train`` rows; held-out accuracy on the other rows.

    Classes are weighted by their inverse frequency so that one-vs-rest with several classes does not
    favour "rest"; the direction is the hyperplane's unit normal, oriented toward the positive class.
    """
    from sklearn.svm import LinearSVC

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    train = np.asarray(train, dtype=bool)
    if len(set(y[train].tolist())) < 2:
        raise ValueError("the training split holds only one class; generate more images per class")
    svm = LinearSVC(C=c, class_weight="balanced", max_iter=20000, random_state=0)
    svm.fit(x[train], y[train])
    normal = svm.coef_.reshape(-1)
    norm = float(np.linalg.norm(normal))
    if not norm > 0:
        raise ValueError(f"step {step}: the classifier found no direction (zero normal)")
    test = ~train
    accuracy = float(np.mean(svm.predict(x[test]) == y[test])) if test.any() else float("nan")
    return StepFit(step=step, direction=normal / norm, accuracy=accuracy)


def choose_step(accuracy: Mapping[int, float], goal: float = ACCURACY_GOAL) -> tuple[int, str]:
    """The earliest step whose held-out accuracy reaches ``goal``, else the most accurate (earliest tie)."""
    steps = sorted(accuracy)
    for step in steps:
        if accuracy[step] >= goal:
            return step, f"earliest recorded step with held-out accuracy >= {goal}"
    best = max(steps, key=lambda s: (accuracy[s], -s))
    return best, f"no recorded step reached held-out accuracy {goal}; the most accurate one"


def parse_class_specs(items: Sequence[str]) -> dict[str, str]:
    """``["woman=a photo of a woman", ...]`` -> {name: prompt}; one-line ValueError for bad items."""
    classes: dict[str, str] = {}
    for item in items:
        name, sep, prompt = item.partition("=")
        name, prompt = name.strip(), prompt.strip()
        if not sep or not name or not prompt:
            raise ValueError(f"class '{item}' must look like NAME=PROMPT, e.g. woman=\"a photo of a woman\"")
        if name in classes:
            raise ValueError(f"class '{name}' given twice")
        steering_filename(name, KIND)  # the name becomes a file name: validate it now
        classes[name] = prompt
    return check_classes(classes)


def parse_steps(text: str) -> list[int]:
    """``"0,5,10"`` -> [0, 5, 10]; one-line ValueError for anything else."""
    steps = []
    for item in text.split(","):
        if item.strip():
            try:
                steps.append(int(item))
            except ValueError:
                raise ValueError(f"record step '{item.strip()}' is not an integer") from None
    if not steps:
        raise ValueError("no record steps given; e.g. --record-steps 0,5,10,15")
    return steps


def check_classes(classes: Mapping[str, str]) -> dict[str, str]:
    if len(classes) < 2:
        raise ValueError(f"learning a direction needs at least 2 classes, got {len(classes)}")
    for name, prompt in classes.items():
        steering_filename(name, KIND)
        if not str(prompt).strip():
            raise ValueError(f"class '{name}' has an empty prompt")
    return dict(classes)


def fit_noise_directions(
    rows: Sequence[tuple[str, int, Mapping[int, torch.Tensor]]],
    classes: Mapping[str, str],
    record: Sequence[int],
    *,
    shape: Sequence[int],
    seed: int,
    base_model: str,
    fingerprint: str,
    axis: str | None,
    recipe: Mapping[str, Any],
    svm_c: float = DEFAULT_SVM_C,
    recommended_weight: float = DEFAULT_WEIGHT,
    seconds: float = 0.0,
    progress: Progress | None = None,
) -> list[NoiseDirection]:
    """The method on recorded latents: one linear SVM per recorded step (per class, one-vs-rest for
    three or more), the earliest step that separates the classes, and one direction per class.

    ``rows`` are ``(class name, image seed, {step: latents})`` of the usable images; images are split
    into train and held-out by seed. Returns the directions in ``classes`` order (not saved).
    """
    names = list(classes)
    record = list(record)
    shape = tuple(shape)
    labels = np.array([names.index(name) for name, _, _ in rows])
    seeds = np.array([s for _, s, _ in rows])
    train_seeds = split_by_seed(seeds.tolist(), seed=seed)
    train = np.isin(seeds, list(train_seeds))
    # two classes: one SVM, its normal for the first class, the negative for the second
    targets = [0] if len(names) == 2 else list(range(len(names)))
    fits: dict[int, dict[int, StepFit]] = {t: {} for t in targets}
    for i, step in enumerate(record):
        features = torch.stack([lat[step].reshape(-1) for _, _, lat in rows]).numpy()
        for t in targets:
            fits[t][step] = fit_direction(features, labels == t, train, c=svm_c, step=step)
        if progress:
            progress("fit", i + 1, len(record))

    held_out = labels[~train]
    out: list[NoiseDirection] = []
    for index, name in enumerate(names):
        t, sign = (0, 1.0 if index == 0 else -1.0) if len(names) == 2 else (index, 1.0)
        accuracy = {s: fits[t][s].accuracy for s in record}
        step, why = choose_step(accuracy)
        # Chance is what always answering the held-out majority scores; "clearly better" is two
        # binomial standard errors above it (at least 5 points), so a few lucky guesses do not count.
        share = float(np.mean(held_out == t)) if held_out.size else 0.5
        chance = max(share, 1.0 - share)
        margin = max(0.05, 2.0 * math.sqrt(chance * (1.0 - chance) / max(held_out.size, 1)))
        at_chance = not max(accuracy.values()) > chance + margin
        if at_chance:
            warnings.warn(
                f"noise direction '{name}' is no better than chance: best held-out accuracy "
                f"{max(accuracy.values()):.3f} vs chance {chance:.3f} (+{margin:.3f} to count) on "
                f"{held_out.size} held-out images; no recommended weight is stored. Generate more images "
                "per class, record later steps, or raise --guidance",
                RuntimeWarning,
                stacklevel=2,
            )
        stacked = torch.stack(
            [torch.from_numpy(sign * fits[t][s].direction).float().reshape(shape) for s in record]
        )
        metadata = {
            "name": name,
            "base_model": base_model,
            "fingerprint": fingerprint,
            "classes": names,
            "axis": axis or "",
            "class_name": name if axis else "",  # how fair generation finds the file for a class
            "step": step,
            "step_rule": why,
            "record_steps": record,
            "heldout_accuracy": {str(s): round(a, 4) for s, a in accuracy.items()},
            "weight_unit": WEIGHT_UNIT,
            "sign": "+d" if len(names) > 2 or index == 0 else f"-d of '{names[0]}'",
            "recipe": {
                "prompts": dict(classes),
                **recipe,
                "n_images_used": int(len(rows)),
                "seed": seed,
                "split": f"{TRAIN_FRACTION:.0%}/{1 - TRAIN_FRACTION:.0%} by seed",
                "classifier": "sklearn LinearSVC (class_weight=balanced)",
                "C": svm_c,
                "scheme": "binary" if len(names) == 2 else "one-vs-rest",
            },
            "seconds": seconds,
        }
        if at_chance:  # a weight for a direction that separates nothing would steer at random
            metadata["no_weight_reason"] = f"held-out accuracy at chance level ({chance:.2f})"
        else:
            metadata["recommended_weight"] = float(recommended_weight)
            metadata["norm_fraction"] = round(norm_fraction(recommended_weight, shape), 5)
        out.append(NoiseDirection(name, stacked[record.index(step)].clone(), metadata, stacked))
    return out
