"""Bundled models and benchmarks: packages register them here, and the core looks them up by name.

A bundled model is a name that stands for a pipeline folder plus what diffsteer should use with it
when a command says nothing else: its attribute classifier, its guidance scale, its benchmark, its
labelled reference images and its folder of steering files. The core never names a bundled model; it
asks this registry, so a model shipped by another package behaves exactly like the one shipped here.

Two ways in:

* a package declares an entry point in the group ``diffsteer.plugins`` whose target is a function
  ``register(registry)``; the registry calls every such function once, the first time it is used
  (so importing diffsteer costs nothing), and a plugin that fails gives one warning naming it;
* code calls :func:`register_model` / :func:`register_benchmark` directly, e.g. in a notebook.

The registry imports nothing from diffsteer (not even for type hints), so every layer may consult it
without an import circle: a benchmark loader returns a :class:`~diffsteer.benchmarks.spec.Benchmark`
and a reference factory a :class:`~diffsteer.reference.ReferenceSet`, which the callers check.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

__all__ = [
    "ENTRY_POINT_GROUP",
    "BundledModel",
    "PluginWarning",
    "Registry",
    "benchmark_loader",
    "bundled_benchmarks",
    "bundled_model",
    "bundled_models",
    "command_groups",
    "default_model",
    "plugin_failures",
    "register_benchmark",
    "register_model",
]

ENTRY_POINT_GROUP = "diffsteer.plugins"

# A folder (or hub id, for a classifier) given as is, or a function returning it when first needed:
# a function lets a package register without touching its files until the model is used.
Location = Path | str | Callable[[], Path | str]


class PluginWarning(UserWarning):
    """A plugin of the ``diffsteer.plugins`` group could not be loaded; the rest works without it."""


def _locate(location: Location) -> Path | str:
    return location() if callable(location) else location


@dataclass(frozen=True)
class BundledModel:
    """A registered model and the defaults that go with it (``None``: the general default)."""

    name: str
    pipeline: Location
    classifier: Location | None = None
    guidance: float | None = None
    benchmark: str | None = None
    reference: Callable[[], Any] | None = None
    steering_dir: Location | None = None
    captions: Callable[[], Any] | None = None

    def pipeline_folder(self) -> Path:
        """The diffusers pipeline folder (``model_index.json`` and the component folders)."""
        return Path(_locate(self.pipeline))

    def classifier_ref(self) -> str | None:
        """The model's own CLIP classifier (a folder or hub id), if it has one."""
        return None if self.classifier is None else str(_locate(self.classifier))

    def steering_folder(self) -> Path | None:
        """The folder of steering files shipped with the model, if any."""
        return None if self.steering_dir is None else Path(_locate(self.steering_dir))

    def caption_list(self) -> list[str] | None:
        """Captions of the model's training distribution (what a guard learns to read), if provided."""
        return None if self.captions is None else [str(c) for c in self.captions()]

    def reference_set(self) -> Any:
        """Labelled images against which the audit checks its classifier, if the model provides them."""
        return None if self.reference is None else self.reference()


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"{what} name must be a non-empty string without outer spaces, got {name!r}")
    return name


class Registry:
    """Bundled models, benchmarks and command groups, filled by plugins (once, when first used) and calls.

    ``group``: the entry-point group whose plugins fill it; ``None`` for a registry without plugins
    (what tests use to stay apart from the installed ones).
    """

    def __init__(self, group: str | None = ENTRY_POINT_GROUP) -> None:
        self.group = group
        self._models: dict[str, BundledModel] = {}
        self._benchmarks: dict[str, Callable[[], Any]] = {}
        self._commands: dict[str, Callable[[], Any]] = {}
        self._plugins_loaded = group is None
        self._loading = False
        # another thread waits until loading is over; the loading thread itself passes (a plugin's own calls)
        self._lock = threading.RLock()
        # plugin name -> why it failed, kept so that "model not found" can say why a name is missing
        self.plugin_failures: dict[str, str] = {}

    # ------------------------------------------------------------------------------------ plugins
    def load_plugins(self) -> None:
        """Call every plugin's ``register(registry)`` once; a failing plugin warns and is skipped."""
        if self._plugins_loaded:
            return
        with self._lock:
            if self._plugins_loaded or self._loading:
                return
            self._loading = True
            try:
                self._call_plugins()
            finally:
                self._loading = False
                self._plugins_loaded = True

    def _call_plugins(self) -> None:
        seen: set[tuple[str, str]] = set()
        for ep in entry_points(group=str(self.group)):
            if (ep.name, ep.value) in seen:  # one distribution found twice on the path
                continue
            seen.add((ep.name, ep.value))
            try:
                ep.load()(self)
            except Exception as exc:  # any failure of a plugin leaves the core and other plugins working
                reason = f"{type(exc).__name__}: {_first_line(exc)}"
                self.plugin_failures[ep.name] = reason
                warnings.warn(
                    f"diffsteer plugin {ep.name!r} ({ep.value}) could not be loaded and is skipped: {reason}",
                    PluginWarning,
                    stacklevel=4,
                )

    # -------------------------------------------------------------------------------- registering
    def register_model(
        self,
        name: str,
        pipeline: Location,
        *,
        classifier: Location | None = None,
        guidance: float | None = None,
        benchmark: str | None = None,
        reference: Callable[[], Any] | None = None,
        steering_dir: Location | None = None,
        captions: Callable[[], Any] | None = None,
    ) -> BundledModel:
        """Make ``name`` a model reference; registering a name again replaces it.

        ``pipeline``: the pipeline folder (or a function returning it, called when the model is
        loaded). ``classifier``: the CLIP folder or hub id that labels its images (default: the
        general CLIP). ``guidance``: its own classifier-free guidance scale (default 7.5).
        ``benchmark``: the benchmark its audits use by default. ``reference``: a function returning
        a :class:`~diffsteer.reference.ReferenceSet` of labelled images. ``steering_dir``: a folder of
        steering files searched after the user's own. ``captions``: a function returning captions of
        its training distribution (the default training text of ``diffsteer guard train``).
        """
        self.load_plugins()  # plugins first: a later call replaces a plugin's entry, never the reverse
        _check_name(name, "model")
        if pipeline is None:
            raise ValueError(f"model {name!r}: pipeline is required (a folder or a function returning one)")
        if guidance is not None and (isinstance(guidance, bool) or not float(guidance) >= 0):
            raise ValueError(f"model {name!r}: guidance must be a number at least 0, got {guidance!r}")
        if benchmark is not None:
            _check_name(benchmark, f"model {name!r}: benchmark")
        if reference is not None and not callable(reference):
            raise ValueError(f"model {name!r}: reference must be a function returning a ReferenceSet")
        if captions is not None and not callable(captions):
            raise ValueError(f"model {name!r}: captions must be a function returning a list of captions")
        entry = BundledModel(
            name=name,
            pipeline=pipeline,
            classifier=classifier,
            guidance=None if guidance is None else float(guidance),
            benchmark=benchmark,
            reference=reference,
            steering_dir=steering_dir,
            captions=captions,
        )
        self._models[name] = entry
        return entry

    def register_benchmark(self, name: str, loader: Callable[[], Any]) -> None:
        """Make ``name`` a benchmark whose prompts ``loader()`` returns; registering again replaces it."""
        self.load_plugins()
        _check_name(name, "benchmark")
        if not callable(loader):
            raise ValueError(f"loader for benchmark {name!r} is not callable")
        self._benchmarks[name] = loader

    def register_commands(self, name: str, build: Callable[[], Any]) -> None:
        """Add a command group ``diffsteer NAME ...``; ``build()`` returns its ``typer.Typer`` app."""
        self.load_plugins()
        _check_name(name, "command group")
        if not callable(build):
            raise ValueError(f"command group {name!r}: build must be a function returning a typer app")
        self._commands[name] = build

    # ---------------------------------------------------------------------------------- looking up
    def model(self, name: str) -> BundledModel | None:
        self.load_plugins()
        return self._models.get(name)

    def models(self) -> list[str]:
        """Registered model names, in the order they were registered (plugins first)."""
        self.load_plugins()
        return list(self._models)

    def default_model(self) -> str:
        """The model commands use when none is named: the first registered one."""
        names = self.models()
        if not names:
            why = "".join(f"; plugin {p!r} failed: {r}" for p, r in self.plugin_failures.items())
            raise ValueError(
                f"model: no bundled model is registered{why}; name a local pipeline folder or a hub id"
            )
        return names[0]

    def benchmark(self, name: str) -> Callable[[], Any] | None:
        self.load_plugins()
        return self._benchmarks.get(name)

    def benchmarks(self) -> list[str]:
        self.load_plugins()
        return list(self._benchmarks)

    def command_groups(self) -> dict[str, Callable[[], Any]]:
        self.load_plugins()
        return dict(self._commands)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else ""


# The process-wide registry. Functions below read it at call time, so a test may swap it for its own.
REGISTRY = Registry()


def register_model(
    name: str,
    pipeline: Location,
    *,
    classifier: Location | None = None,
    guidance: float | None = None,
    benchmark: str | None = None,
    reference: Callable[[], Any] | None = None,
    steering_dir: Location | None = None,
    captions: Callable[[], Any] | None = None,
) -> BundledModel:
    """Register a bundled model with the process-wide registry (see :meth:`Registry.register_model`)."""
    return REGISTRY.register_model(
        name,
        pipeline,
        classifier=classifier,
        guidance=guidance,
        benchmark=benchmark,
        reference=reference,
        steering_dir=steering_dir,
        captions=captions,
    )


def register_benchmark(name: str, loader: Callable[[], Any]) -> None:
    """Register a benchmark with the process-wide registry (see :meth:`Registry.register_benchmark`)."""
    REGISTRY.register_benchmark(name, loader)


def bundled_model(name: str) -> BundledModel | None:
    """The registered model called ``name``, or ``None`` (then ``name`` is a folder or a hub id)."""
    return REGISTRY.model(name)


def bundled_models() -> list[str]:
    return REGISTRY.models()


def default_model() -> str:
    """The model used when none is named: the first registered (raises ValueError if there is none)."""
    return REGISTRY.default_model()


def benchmark_loader(name: str) -> Callable[[], Any] | None:
    return REGISTRY.benchmark(name)


def bundled_benchmarks() -> list[str]:
    return REGISTRY.benchmarks()


def command_groups() -> dict[str, Callable[[], Any]]:
    return REGISTRY.command_groups()


def plugin_failures() -> dict[str, str]:
    """Plugins that could not be loaded, with the reason (after the registry was first used)."""
    REGISTRY.load_plugins()
    return dict(REGISTRY.plugin_failures)
