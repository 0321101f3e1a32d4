"""Steering a user's own diffusers pipeline call: ``with steer(pipe, hspace="woman"): pipe(prompt, ...)``.

The steering enters through the pipeline's own seams, as in diffsteer's generator, and with the same
arithmetic (the seam functions of :mod:`diffsteer.generate`):

- noise directions: ``pipe.prepare_latents`` is wrapped on this one pipeline object; it draws the
  initial noise from the call's ``generator`` as diffusers does, adds the offsets, and hands the
  result to the pipeline's own ``prepare_latents`` as ``latents=``;
- text offsets: ``pipe.encode_prompt`` is wrapped; its ``prompt_embeds`` (and SDXL's pooled
  embeddings) come back with the offsets added, as if passed as ``prompt_embeds=``;
- h-space vectors: a forward hook on the U-Net bottleneck block.

Leaving the ``with`` block (also by an exception) removes both wrappers and the hook, so the pipeline
is exactly as it was. Each image's seed, which decides its class under fair generation, is the
``initial_seed()`` of its generator: pass one fresh ``torch.Generator().manual_seed(seed)`` per image
(a list), or one generator for a single image. With CPU generators the images equal diffsteer's
``SteeredGenerator`` images for the same seeds, strengths, steps and guidance (same batch grouping).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from diffsteer.generate import (
    ImageRequest,
    SteeredGenerator,
    add_noise_offsets,
    add_text_offsets,
    draw_noise,
    hspace_hook,
)
from diffsteer.steering.library import DEFAULT_DIR, SteeringLibrary
from diffsteer.steering.preset import FAIR_METHODS, FairSpec, SteeringItem, SteeringSpec, parse_item
from diffsteer.steering.steerer import Steerer

# what a caller may pass for hspace=, noise= or text=
Items = str | Path | Mapping[str, float] | Sequence[str | Path | tuple[str, float]] | None


def _items(value: Items, parameter: str) -> tuple[SteeringItem, ...]:
    """Names, ``"name:strength"`` strings, paths, ``{name: strength}`` or a list of them, as items."""
    if value is None:
        return ()
    if isinstance(value, (str, Path)):
        value = [value]
    if isinstance(value, Mapping):
        return tuple(SteeringItem(str(name), float(strength)) for name, strength in value.items())
    out = []
    for item in value:
        if isinstance(item, Path):
            out.append(SteeringItem(str(item)))
        elif isinstance(item, str):
            out.append(parse_item(item, option=parameter))
        elif isinstance(item, tuple) and len(item) == 2:
            out.append(SteeringItem(str(item[0]), float(item[1])))
        else:
            raise ValueError(
                f"{parameter}: expected a name, 'name:strength', a path or (name, strength), got {item!r}"
            )
    return tuple(out)


def _fair(
    fair: str | Sequence[str] | FairSpec | None, method: str, target: Mapping[str, float] | str | None
) -> FairSpec | None:
    if fair is None:
        if target is not None:
            raise ValueError("fair_target needs fair=AXIS")
        return None
    if isinstance(fair, FairSpec):
        return fair
    if method not in FAIR_METHODS:
        raise ValueError(f"fair_method must be one of {', '.join(FAIR_METHODS)}, got {method!r}")
    axes = tuple(a.strip() for a in (fair.split(",") if isinstance(fair, str) else fair) if a.strip())
    if not axes:
        raise ValueError("fair must name at least one axis, e.g. fair='gender'")
    if isinstance(target, str):
        from diffsteer.steering.fair import parse_target

        target = parse_target(target)
    return FairSpec(axes=axes, method=method, target=None if target is None else dict(target))


def steering_spec(
    *,
    hspace: Items = None,
    noise: Items = None,
    text: Items = None,
    fair: str | Sequence[str] | FairSpec | None = None,
    fair_method: str = "hspace",
    fair_target: Mapping[str, float] | str | None = None,
    safe: bool = False,
    responsible: bool = False,
    directions: Sequence[str | Path] = (),
    spec: SteeringSpec | None = None,
) -> SteeringSpec:
    """The :class:`SteeringSpec` that keyword arguments ask for (added to ``spec`` when given)."""
    built = SteeringSpec(
        hspace=_items(hspace, "hspace"),
        noise=_items(noise, "noise"),
        text=_items(text, "text"),
        fair=_fair(fair, fair_method, fair_target),
        safe=bool(safe),
        responsible=bool(responsible),
        directions=tuple(str(d) for d in directions),
    )
    return built if spec is None else spec.merged(built)


def _axis_classes() -> dict[str, tuple[str, ...]]:
    from diffsteer.attributes import builtin_axes

    return {name: tuple(axis.classes) for name, axis in builtin_axes().items()}


def _seeds(generator: Any, batch: int) -> list[int | None]:
    """Each image's seed: its own generator's initial seed; unknown when one generator serves many."""
    if isinstance(generator, list):
        return [int(g.initial_seed()) for g in generator]
    if isinstance(generator, torch.Generator) and batch == 1:
        return [int(generator.initial_seed())]
    return [None] * batch


class PipelineSteering:
    """Steering attached to one pipeline object while a ``with`` block runs (see the module docstring)."""

    def __init__(self, pipe: Any, steerer: Steerer, *, hspace_branches: str = "conditional") -> None:
        spec = steerer.spec
        if spec.fair is not None and spec.fair.method not in ("hspace", "noise"):
            # text offsets are applied before the call's generators (hence seeds) are known
            raise ValueError(
                f"fair_method {spec.fair.method!r} cannot steer a pipeline call; use hspace or noise"
            )
        self.pipe = pipe
        self.steerer = steerer
        self.generator: SteeredGenerator = steerer.generator
        self.both = hspace_branches == "both"
        self.applied: list[dict[str, Any]] = []  # what each image of the latest call received
        self._needs_seeds = spec.fair is not None or spec.responsible
        self._uses_hspace = bool(spec.hspace or spec.safe or spec.responsible) or (
            spec.fair is not None and spec.fair.method == "hspace"
        )
        self._attached = False
        self._handle: Any = None
        self._hook: Callable[..., Any] | None = None
        self._prompts: list[str] | None = None
        self._guided = True

    # ------------------------------------------------------------------------------ attaching
    def __enter__(self) -> PipelineSteering:
        self.attach()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    def attach(self) -> None:
        """Wrap ``prepare_latents`` and ``encode_prompt`` on this pipeline and hook its bottleneck."""
        if self._attached:
            raise RuntimeError("this steering is already attached")
        own = [name for name in ("prepare_latents", "encode_prompt") if name in vars(self.pipe)]
        if own:
            raise RuntimeError(
                f"pipe already has its own {own[0]} (is it steered already?); leave that steering first"
            )
        self._original_prepare = self.pipe.prepare_latents
        self._original_encode = self.pipe.encode_prompt
        self._encode_signature = inspect.signature(self._original_encode)
        self._prepare_signature = inspect.signature(self._original_prepare)
        self.pipe.prepare_latents = self._prepare_latents
        self.pipe.encode_prompt = self._encode_prompt
        self._attached = True
        if self._uses_hspace:
            block = self.pipe.unet.get_submodule(self.generator.steered_block)
            self._handle = block.register_forward_hook(self._bottleneck_hook)

    def detach(self) -> None:
        """Remove every wrapper and hook :meth:`attach` added; the pipeline is as it was."""
        if not self._attached:
            return
        try:
            if self._handle is not None:
                self._handle.remove()
        finally:
            self._handle = None
            for name in ("prepare_latents", "encode_prompt"):
                vars(self.pipe).pop(name, None)
            self._attached = False
            self._hook = None
            self._prompts = None

    # ------------------------------------------------------------------------------- the seams
    def _requests(
        self, prompts: Sequence[str], seeds: Sequence[int | None]
    ) -> tuple[list[ImageRequest], list[dict[str, Any]]]:
        """Each image's steered request, and the description of what it received."""
        if self._needs_seeds and any(s is None for s in seeds):
            raise ValueError(
                "generator: fair or responsible steering picks each image's class by its seed; pass a list "
                "with one torch.Generator().manual_seed(seed) per image"
            )
        requests, applied = [], []
        for prompt, seed in zip(prompts, seeds, strict=True):
            steered, desc = self.steerer.steer(ImageRequest(prompt=prompt, seed=0 if seed is None else seed))
            requests.append(steered)
            applied.append({"prompt": prompt, "seed": seed, **desc})
        return requests, applied

    def _encode_prompt(self, *args: Any, **kwargs: Any) -> Any:
        bound = self._encode_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        prompt = bound.arguments.get("prompt")
        per_prompt = int(bound.arguments.get("num_images_per_prompt") or 1)
        self._guided = bool(bound.arguments.get("do_classifier_free_guidance", True))
        encoded = self._original_encode(*args, **kwargs)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        rows = encoded[0].shape[0]
        if len(prompts) * per_prompt != rows:
            prompts = [""] * (rows // per_prompt)  # prompts given as embeddings: none to read
        self._prompts = [p for p in prompts for _ in range(per_prompt)]  # encode_prompt's row order
        # the text part of the steering does not depend on the seed (checked in __init__)
        requests = self._requests(self._prompts, [0] * rows)[0] if self.steerer.spec.text else []
        if all(r.prompt_embeds_offset is None and r.pooled_embeds_offset is None for r in requests):
            return encoded
        pooled = encoded[2] if len(encoded) == 4 else None
        embeds, pooled = add_text_offsets(encoded[0], pooled, requests)
        if len(encoded) == 4:
            return (embeds, encoded[1], pooled, encoded[3])
        return (embeds, *encoded[1:])

    def _prepare_latents(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        bound = self._prepare_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        batch, generator, latents = int(a["batch_size"]), a["generator"], a.get("latents")
        scale = int(getattr(self.pipe, "vae_scale_factor", 8))
        shape = (int(a["num_channels_latents"]), int(a["height"]) // scale, int(a["width"]) // scale)
        prompts = self._prompts if self._prompts is not None and len(self._prompts) == batch else [""] * batch
        requests, self.applied = self._requests(prompts, _seeds(generator, batch))
        if latents is None:
            noise = draw_noise(generator, batch, shape, device=a["device"])
        else:  # the caller's own unit-variance noise: steer it the same way
            noise = latents.detach().to(torch.float32)
        a["latents"] = add_noise_offsets(noise, requests).to(device=a["device"], dtype=a["dtype"])
        self._hook = hspace_hook(
            requests,
            expected_shape=self.generator.hspace_shape,
            block=self.generator.steered_block,
            guided=self._guided,
            both=self.both,
        )
        return self._original_prepare(*bound.args, **bound.kwargs)

    def _bottleneck_hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        return None if self._hook is None else self._hook(module, args, output)


def steer(
    pipe: Any,
    *,
    hspace: Items = None,
    noise: Items = None,
    text: Items = None,
    fair: str | Sequence[str] | FairSpec | None = None,
    fair_method: str = "hspace",
    fair_target: Mapping[str, float] | str | None = None,
    safe: bool = False,
    responsible: bool = False,
    spec: SteeringSpec | None = None,
    directions: Sequence[str | Path] = (),
    model: str | None = None,
    hspace_branches: str = "conditional",
    height: int | None = None,
    width: int | None = None,
) -> PipelineSteering:
    """Steer ``pipe``'s own calls inside a ``with`` block; every file is found and checked first.

    ``hspace``, ``noise`` and ``text`` name steering files (``"woman"``, ``"woman:0.5"``, a path, a
    list, or ``{name: strength}``; a missing strength is the file's default). ``fair`` names axes
    (``"gender"``) whose class is chosen per image by seed, with ``fair_method`` files (hspace or
    noise) and an optional ``fair_target``. Files are searched in ``directions``, then ``./directions``,
    then the bundled folder of ``model`` (a bundled model's name). ``height``/``width``: the image size
    the files are checked against (default: the model's own).
    """
    wanted = steering_spec(
        hspace=hspace,
        noise=noise,
        text=text,
        fair=fair,
        fair_method=fair_method,
        fair_target=fair_target,
        safe=safe,
        responsible=responsible,
        directions=directions,
        spec=spec,
    )
    generator = SteeredGenerator(pipe, height=height, width=width, hspace_branches=hspace_branches)
    return PipelineSteering(
        pipe, make_steerer(wanted, generator, model=model), hspace_branches=hspace_branches
    )


def make_steerer(spec: SteeringSpec, generator: SteeredGenerator, *, model: str | None = None) -> Steerer:
    """A steerer for ``spec`` on ``generator``'s pipeline: files searched in the spec's directions,
    ``./directions`` and, when ``model`` names a bundled model, its own folder; all checked now."""
    from diffsteer.models import model_fingerprint

    if model is not None:
        library = SteeringLibrary.for_model(model, spec.directions)
    else:
        library = SteeringLibrary([*spec.directions, DEFAULT_DIR])
    return Steerer(
        spec,
        generator,
        fingerprint=model_fingerprint(generator.pipe),
        library=library,
        axis_classes=_axis_classes(),
    )
