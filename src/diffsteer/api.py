"""The front door: ``diffsteer.load(model)`` and the one object that does everything with that model.

A :class:`Model` holds one loaded pipeline and offers what the commands offer, as Python calls:
``generate`` (seeded, optionally steered images), ``audit`` (the full audit into a run folder),
``learn_hspace`` / ``learn_noise`` (steering files), and ``steer`` (steering the pipeline's own
``pipe(...)`` calls). Each is a thin call of the library function the command line uses, so a
notebook and ``diffsteer audit`` give the same numbers for the same settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from diffsteer.audit import AuditResult
    from diffsteer.steering.attach import Items, PipelineSteering
    from diffsteer.steering.hspace import HSpaceVector
    from diffsteer.steering.noise import NoiseDirection
    from diffsteer.steering.preset import FairSpec, SteeringSpec

Progress = Callable[[str, int, int], None]  # (stage, done, total), as everywhere in diffsteer

DEFAULT_GUIDANCE = 7.5  # for a pipeline object, whose model has no registered guidance


def load(model: Any = None, *, device: str = "cpu", dtype: str = "float32") -> Model:
    """Load ``model`` (a bundled model's name, a local pipeline folder or a hub id; default: the
    bundled model) on ``device`` in ``dtype``, or wrap a diffusers pipeline object you already have."""
    from diffsteer.models import load_pipeline
    from diffsteer.registry import default_model

    if model is None:
        model = default_model()
    if isinstance(model, (str, Path)):
        ref = str(model)
        return Model(load_pipeline(ref, device=device, dtype=dtype), ref, device=device, dtype=dtype)
    if not callable(getattr(model, "encode_prompt", None)) or getattr(model, "unet", None) is None:
        raise ValueError(
            f"model must be a model name, a folder, a hub id or a Stable Diffusion pipeline, "
            f"got {type(model).__name__}"
        )
    return Model(model, None, device=device, dtype=dtype)


def _tuples(options: dict[str, Any]) -> dict[str, Any]:
    """AuditConfig holds tuples; a notebook passes lists."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


class Model:
    """One loaded model: generate, audit, learn steering files, steer its pipeline's own calls.

    ``pipe`` is the diffusers pipeline itself. ``name`` is the reference it was loaded from (None for
    a wrapped pipeline object); steering files are also looked up in that model's bundled folder.
    """

    def __init__(self, pipe: Any, name: str | None, *, device: str = "cpu", dtype: str = "float32") -> None:
        self.pipe = pipe
        self.name = name
        self.device = device
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"Model({self.name or type(self.pipe).__name__!r}, device={self.device!r})"

    @property
    def guidance(self) -> float:
        """The model's own guidance scale (a bundled model's registered one, else 7.5)."""
        if self.name is None:
            return DEFAULT_GUIDANCE
        from diffsteer.models import default_guidance

        return float(default_guidance(self.name))

    def _reference(self, what: str) -> str:
        if self.name is None:
            raise ValueError(
                f"{what} records which model made its files: load the model by name or folder "
                f"(diffsteer.load('path/to/pipeline')) rather than from a pipeline object"
            )
        return self.name

    # ------------------------------------------------------------------------------ generate
    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        images_per_prompt: int = 1,
        seed: int = 0,
        steps: int = 20,
        guidance: float | None = None,
        batch_size: int = 8,
        hspace: Items = None,
        noise: Items = None,
        text: Items = None,
        fair: str | Sequence[str] | FairSpec | None = None,
        fair_method: str = "hspace",
        fair_target: Mapping[str, float] | str | None = None,
        safe: bool = False,
        responsible: bool = False,
        steering: SteeringSpec | None = None,
        directions: Sequence[str | Path] = (),
        hspace_branches: str = "conditional",
        progress: Progress | None = None,
    ) -> list[Image.Image | None]:
        """Images of each prompt, image ``k`` from seed ``seed + k`` (the audit's seeds), prompt-major.

        Steering options are those of :func:`diffsteer.steer`. An image that came out unusable
        (non-finite pixels) is None. ``guidance`` defaults to the model's own.
        """
        from diffsteer.generate import ImageRequest, SteeredGenerator
        from diffsteer.steering.attach import make_steerer, steering_spec

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise ValueError("prompts must be one or more non-empty strings")
        if images_per_prompt < 1:
            raise ValueError(f"images_per_prompt must be at least 1, got {images_per_prompt}")
        spec = steering_spec(
            hspace=hspace,
            noise=noise,
            text=text,
            fair=fair,
            fair_method=fair_method,
            fair_target=fair_target,
            safe=safe,
            responsible=responsible,
            directions=directions,
            spec=steering,
        )
        generator = SteeredGenerator(
            self.pipe,
            steps=steps,
            guidance=self.guidance if guidance is None else guidance,
            batch_size=batch_size,
            hspace_branches=hspace_branches,
        )
        requests = [ImageRequest(p, seed + k) for p in prompts for k in range(images_per_prompt)]
        if not spec.is_empty:
            steerer = make_steerer(spec, generator, model=self.name)
            requests = [steerer.steer(r)[0] for r in requests]
        report = progress or (lambda _stage, _done, _total: None)
        images: list[Image.Image | None] = []
        report("generate", 0, len(requests))
        for start in range(0, len(requests), batch_size):
            images += [out.image for out in generator.generate(requests[start : start + batch_size])]
            report("generate", len(images), len(requests))
        return images

    # ---------------------------------------------------------------------------------- steer
    def steer(self, **options: Any) -> PipelineSteering:
        """:func:`diffsteer.steer` on this model's pipeline (its bundled steering files included):
        ``with model.steer(hspace="woman"): model.pipe("a photo of a doctor")``."""
        from diffsteer.steering.attach import steer

        return steer(self.pipe, model=self.name, **options)

    # ---------------------------------------------------------------------------------- audit
    def audit(
        self,
        out: str | Path,
        *,
        resume: bool = False,
        force: bool = False,
        progress: Progress | None = None,
        **config: Any,
    ) -> AuditResult:
        """Audit this model into the folder ``out`` (summary.json, report.html); returns the result.

        ``config`` takes :class:`~diffsteer.AuditConfig`'s fields (``images_per_prompt``,
        ``mitigations``, ``benchmark``, ``steering`` ...); unset ones get the model's defaults.
        ``resume`` continues an interrupted run in ``out``; ``force`` discards one made otherwise.
        """
        from diffsteer.audit import AuditConfig, run_audit

        known = {f.name for f in fields(AuditConfig)} - {"model", "device", "dtype"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown audit option(s) {unknown}; expected some of {sorted(known)}")
        settings = AuditConfig(
            model=self._reference("an audit"), device=self.device, dtype=self.dtype, **_tuples(config)
        )
        return run_audit(settings, out, resume=resume, force=force, progress=progress)

    # ---------------------------------------------------------------------------------- learn
    def learn_hspace(
        self,
        concept: str,
        concept_prompt: str,
        neutral_prompt: str,
        *,
        out: str | Path = "directions",
        work_dir: str | Path | None = None,
        progress: Progress | None = None,
        **recipe: Any,
    ) -> HSpaceVector:
        """Learn the h-space vector of ``concept`` and save it in ``out`` (where ``steer`` looks).

        ``recipe`` takes the method's options (images, steps, lr, guidance, axis, class_name ...;
        see ``diffsteer learn hspace --help``). Training images are kept in ``work_dir`` (default
        runs/learn-hspace/CONCEPT), so a second call with the same recipe generates nothing again.
        """
        from diffsteer.experiments.learn import learn_hspace

        vector = learn_hspace(
            self.pipe,
            concept=concept,
            concept_prompt=concept_prompt,
            neutral_prompt=neutral_prompt,
            work_dir=Path(work_dir) if work_dir else Path("runs") / "learn-hspace" / concept,
            base_model=self._reference("learning"),
            progress=progress,
            **recipe,
        )
        vector.save(out)
        return vector

    def learn_noise(
        self,
        classes: Mapping[str, str],
        *,
        axis: str | None = None,
        out: str | Path = "directions",
        work_dir: str | Path | None = None,
        progress: Progress | None = None,
        **recipe: Any,
    ) -> list[NoiseDirection]:
        """Learn one initial-noise direction per class (``{"woman": "a photo of a woman", ...}``) and
        save them in ``out``. ``recipe``: images_per_class, steps, guidance, seed, record_steps ...
        (see ``diffsteer learn noise --help``); images are kept in ``work_dir`` (default
        runs/learn-noise/NAMES)."""
        from diffsteer.experiments.learn import learn_noise_directions

        names = "-".join(classes)
        directions = learn_noise_directions(
            self.pipe,
            dict(classes),
            work_dir=Path(work_dir) if work_dir else Path("runs") / "learn-noise" / names,
            base_model=self._reference("learning"),
            axis=axis,
            progress=progress,
            **recipe,
        )
        for direction in directions:
            direction.save(out)
        return directions
