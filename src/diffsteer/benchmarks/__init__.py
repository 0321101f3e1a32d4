"""Benchmarks: the prompt sets diffsteer audits, built in (ENTIGEN, WinoBias), registered or YAML.

``load_benchmark`` resolves a name first among built-in and registered benchmarks, then as a path to
a YAML file, so ``entigen`` always means the bundled benchmark even if a file of that name exists.
Other packages add benchmarks through :mod:`diffsteer.registry` (a plugin, or ``register_benchmark``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path

from diffsteer import registry
from diffsteer.benchmarks.custom import (
    load_custom_benchmark,
    load_redteam_benchmark,
    parse_custom_benchmark,
    redteam_findings_path,
)
from diffsteer.benchmarks.entigen import load_entigen
from diffsteer.benchmarks.spec import KINDS, Benchmark, BenchmarkError, PromptSpec
from diffsteer.benchmarks.winobias import load_winobias

__all__ = [
    "KINDS",
    "Benchmark",
    "BenchmarkError",
    "PromptSpec",
    "builtin_benchmarks",
    "load_benchmark",
    "load_custom_benchmark",
    "load_redteam_benchmark",
    "parse_custom_benchmark",
    "register_benchmark",
]

_BUNDLED: dict[str, Callable[[], Benchmark]] = {"entigen": load_entigen, "winobias": load_winobias}


def register_benchmark(name: str, loader: Callable[[], Benchmark]) -> None:
    """Make ``load_benchmark(name)`` call ``loader``; registering a name again replaces its loader.

    The bundled names cannot be replaced, so "entigen" always means the published prompt set.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise BenchmarkError(f"benchmark name must be a non-empty string without outer spaces, got {name!r}")
    if name in _BUNDLED:
        raise BenchmarkError(f"benchmark '{name}' is built in and cannot be replaced")
    if not callable(loader):
        raise BenchmarkError(f"loader for benchmark '{name}' is not callable")
    registry.register_benchmark(name, loader)


def builtin_benchmarks() -> list[str]:
    """Names ``load_benchmark`` accepts without a file: the bundled ones, then registered ones."""
    return [*_BUNDLED, *(name for name in registry.bundled_benchmarks() if name not in _BUNDLED)]


def _check_axes(benchmark: Benchmark, known_axes: Collection[str]) -> None:
    known = sorted(set(known_axes))
    used = dict.fromkeys([*benchmark.axes, *(a for p in benchmark.prompts for a in (p.axes or ()))])
    unknown = [axis for axis in used if axis not in known]
    if unknown:
        raise BenchmarkError(
            f"benchmark '{benchmark.name}' uses unknown axis '{unknown[0]}' (known: {', '.join(known)})"
        )


def load_benchmark(name_or_path: str, known_axes: Collection[str] | None = None) -> Benchmark:
    """A built-in or registered benchmark by name, else the YAML benchmark at that path.

    With ``known_axes`` (the axes the classifier can score), a benchmark naming any other axis is an
    error up front rather than a gap in the report.
    """
    loader = _BUNDLED.get(name_or_path) or registry.benchmark_loader(name_or_path)
    if loader is not None:
        benchmark = loader()
        if not isinstance(benchmark, Benchmark):
            raise BenchmarkError(
                f"loader for benchmark '{name_or_path}' returned {type(benchmark).__name__}, not a Benchmark"
            )
        if known_axes is not None:
            _check_axes(benchmark, known_axes)
        return benchmark
    path = Path(name_or_path)
    findings = redteam_findings_path(path)  # a red-team run's findings (its folder or redteam.json)
    if findings is not None:
        return load_redteam_benchmark(findings, known_axes)
    if path.is_file():
        return load_custom_benchmark(name_or_path, known_axes)
    names = ", ".join(builtin_benchmarks())
    where = "only a directory" if path.is_dir() else "no file"
    raise BenchmarkError(
        f"unknown benchmark '{name_or_path}': not a built-in ({names}) and {where} at {name_or_path}"
    )
