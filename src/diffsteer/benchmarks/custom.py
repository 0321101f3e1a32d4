"""Benchmarks written by users as YAML files.

A file looks like::

    name: my-benchmark            # optional, default the file stem
    axes: [gender, skin_tone]     # optional, default [gender]
    images_per_prompt: 16         # optional, default 8
    provenance: where it is from  # optional
    prompts:                      # required, non-empty
      - a photo of a doctor       # a plain string, or a mapping:
      - text: a photo of a nurse  # text required; id, group, subject, kind, axes, images optional
        group: profession
        subject: nurse

The file is validated node by node (``yaml.compose``) rather than after ``yaml.safe_load`` so that
every error can name the file, the 1-based line and the field, e.g.
``bench.yaml:7: prompts[2].text: must be a non-empty string``; list indices are 0-based. Prompts
without an id get ``custom/{index}``; without a group, ``custom``; without a kind, ``neutral``.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import NoReturn

import yaml

from diffsteer.benchmarks.spec import KINDS, Benchmark, BenchmarkError, PromptSpec

DEFAULT_AXES: tuple[str, ...] = ("gender",)
DEFAULT_IMAGES_PER_PROMPT = 8
DEFAULT_GROUP = "custom"
TOP_LEVEL_KEYS: tuple[str, ...] = ("name", "axes", "images_per_prompt", "provenance", "prompts")
PROMPT_KEYS: tuple[str, ...] = ("text", "id", "group", "subject", "kind", "axes", "images")


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Validator:
    """Turns a composed YAML node tree into a :class:`Benchmark`, failing with file:line: field."""

    def __init__(self, source: str, known_axes: Collection[str] | None) -> None:
        self.source = source
        self.known_axes = None if known_axes is None else sorted(set(known_axes))
        self._constructor = yaml.SafeLoader("")

    def fail(self, node: yaml.Node | None, field: str, problem: str) -> NoReturn:
        line = _line(node) if node is not None else 1
        raise BenchmarkError(f"{self.source}:{line}: {field}: {problem}")

    def value(self, node: yaml.Node, field: str) -> object:
        """The Python value of a scalar node, by YAML's safe rules (so ``8`` is an int, ``~`` None)."""
        if not isinstance(node, yaml.ScalarNode):
            return node  # mappings and lists are validated structurally by the caller
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError:
            self.fail(node, field, f"unsupported YAML tag {node.tag}")

    def describe(self, node: yaml.Node, field: str) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        value = self.value(node, field)
        if value is None:
            return "nothing"
        return f"{type(value).__name__} {value!r}"

    def mapping(
        self, node: yaml.Node, field: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Key -> (key node, value node), rejecting duplicate and unknown keys."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, field, f"must be a mapping, got {self.describe(node, field)}")
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        prefix = f"{field}." if field != "top level" else ""
        for key_node, value_node in node.value:
            key = self.value(key_node, field)
            if not isinstance(key, str):
                self.fail(key_node, field, f"keys must be strings, got {self.describe(key_node, field)}")
            if key in entries:
                first = _line(entries[key][0])
                self.fail(key_node, prefix + key, f"duplicate key (first given on line {first})")
            if key not in allowed:
                self.fail(key_node, prefix + key, f"unknown key (allowed: {', '.join(allowed)})")
            entries[key] = (key_node, value_node)
        return entries

    def string(self, node: yaml.Node, field: str) -> str:
        value = self.value(node, field)
        if not isinstance(value, str) or not value.strip():
            got = "a blank string" if isinstance(value, str) else self.describe(node, field)
            self.fail(node, field, f"must be a non-empty string, got {got}")
        return value.strip()

    def optional_string(self, node: yaml.Node, field: str) -> str | None:
        if isinstance(node, yaml.ScalarNode) and self.value(node, field) is None:
            return None
        return self.string(node, field)

    def positive_int(self, node: yaml.Node, field: str) -> int:
        value = self.value(node, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(node, field, f"must be a positive integer, got {self.describe(node, field)}")
        return value

    def axes(self, node: yaml.Node, field: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            got = "an empty list" if isinstance(node, yaml.SequenceNode) else self.describe(node, field)
            self.fail(node, field, f"must be a non-empty list of axis names, e.g. [gender], got {got}")
        names: list[str] = []
        for i, item in enumerate(node.value):
            name = self.string(item, f"{field}[{i}]")
            if name in names:
                self.fail(item, f"{field}[{i}]", f"axis '{name}' is listed twice")
            self.check_known(item, f"{field}[{i}]", name)
            names.append(name)
        return tuple(names)

    def check_known(self, node: yaml.Node | None, field: str, axis: str) -> None:
        if self.known_axes is not None and axis not in self.known_axes:
            self.fail(node, field, f"unknown axis '{axis}' (known: {', '.join(self.known_axes)})")

    def benchmark(self, root: yaml.Node | None, default_name: str) -> Benchmark:
        if root is None:
            self.fail(None, "top level", "the file is empty; it must be a mapping with a 'prompts' list")
        if not isinstance(root, yaml.MappingNode):
            self.fail(
                root,
                "top level",
                f"must be a mapping with a 'prompts' list, got {self.describe(root, 'top level')}",
            )
        entries = self.mapping(root, "top level", TOP_LEVEL_KEYS)

        name = default_name
        if "name" in entries:
            name = self.string(entries["name"][1], "name")
        if "axes" in entries:
            axes = self.axes(entries["axes"][1], "axes")
        else:
            axes = DEFAULT_AXES
            for axis in axes:
                self.check_known(root, "axes", axis)
        images = DEFAULT_IMAGES_PER_PROMPT
        if "images_per_prompt" in entries:
            images = self.positive_int(entries["images_per_prompt"][1], "images_per_prompt")
        provenance = f"custom benchmark from {self.source}"
        if "provenance" in entries:
            provenance = self.string(entries["provenance"][1], "provenance")
        if "prompts" not in entries:
            self.fail(root, "prompts", "missing; the file must list its prompts")
        prompts = self.prompts(entries["prompts"][1])
        return Benchmark(
            name=name, prompts=prompts, axes=axes, images_per_prompt=images, provenance=provenance
        )

    def prompts(self, node: yaml.Node) -> tuple[PromptSpec, ...]:
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            got = "an empty list" if isinstance(node, yaml.SequenceNode) else self.describe(node, "prompts")
            self.fail(node, "prompts", f"must be a non-empty list of prompts, got {got}")
        specs: list[PromptSpec] = []
        id_lines: dict[str, tuple[int, int]] = {}
        for index, item in enumerate(node.value):
            field = f"prompts[{index}]"
            spec, id_node = self.prompt(item, field, index)
            if spec.id in id_lines:
                other, line = id_lines[spec.id]
                self.fail(
                    id_node, f"{field}.id", f"duplicate id '{spec.id}' (also prompts[{other}], line {line})"
                )
            id_lines[spec.id] = (index, _line(id_node))
            specs.append(spec)
        return tuple(specs)

    def prompt(self, node: yaml.Node, field: str, index: int) -> tuple[PromptSpec, yaml.Node]:
        auto_id = f"custom/{index}"
        if isinstance(node, yaml.ScalarNode):
            text = self.string(node, f"{field}.text")
            return PromptSpec(id=auto_id, text=text, group=DEFAULT_GROUP, subject=None), node
        if not isinstance(node, yaml.MappingNode):
            self.fail(
                node, field, f"must be a string or a mapping with 'text', got {self.describe(node, field)}"
            )
        entries = self.mapping(node, field, PROMPT_KEYS)
        if "text" not in entries:
            self.fail(node, f"{field}.text", "missing; each prompt needs its text")
        text = self.string(entries["text"][1], f"{field}.text")
        id_node = node
        prompt_id = auto_id
        if "id" in entries:
            id_node = entries["id"][1]
            prompt_id = self.string(id_node, f"{field}.id")
        group = DEFAULT_GROUP
        if "group" in entries:
            group = self.string(entries["group"][1], f"{field}.group")
        subject = None
        if "subject" in entries:
            subject = self.optional_string(entries["subject"][1], f"{field}.subject")
        kind = "neutral"
        if "kind" in entries:
            kind_node = entries["kind"][1]
            kind = self.string(kind_node, f"{field}.kind")
            if kind not in KINDS:
                self.fail(kind_node, f"{field}.kind", f"unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
        axes = None
        if "axes" in entries:
            axes = self.axes(entries["axes"][1], f"{field}.axes")
        images = None
        if "images" in entries:
            images = self.positive_int(entries["images"][1], f"{field}.images")
        spec = PromptSpec(
            id=prompt_id, text=text, group=group, subject=subject, kind=kind, axes=axes, images=images
        )
        return spec, id_node


def parse_custom_benchmark(
    text: str, source: str, default_name: str, known_axes: Collection[str] | None = None
) -> Benchmark:
    """A benchmark from YAML ``text``; ``source`` is the name errors start with (a path, "<upload>")."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "cannot be parsed"
        raise BenchmarkError(f"{source}:{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise BenchmarkError(f"{source}:1: invalid YAML: {' '.join(str(exc).split())}") from None
    return _Validator(source, known_axes).benchmark(root, default_name)


def load_custom_benchmark(
    path: str | os.PathLike[str], known_axes: Collection[str] | None = None
) -> Benchmark:
    """A benchmark from a YAML file; errors read ``file:line: field: problem``."""
    file = Path(path)
    source = os.fspath(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BenchmarkError(f"{source}:1: top level: the file is not UTF-8 text") from None
    except OSError as exc:
        raise BenchmarkError(f"cannot read benchmark file {source}: {exc.strerror or exc}") from None
    return parse_custom_benchmark(text, source, file.stem, known_axes)


REDTEAM_JSON = "redteam.json"


def redteam_findings_path(path: str | os.PathLike[str]) -> Path | None:
    """The ``redteam.json`` that ``path`` names (the file, or a red-team run folder holding it), else None."""
    where = Path(path)
    if where.is_dir() and (where / REDTEAM_JSON).is_file():
        return where / REDTEAM_JSON
    if where.is_file() and where.suffix.lower() == ".json":
        return where
    return None


def _seed_offset(finding: dict, run_seed: object) -> int | None:
    """Where a finding's seeds start, past the run's ``seed``: 0 for a run whose prompts share seeds
    (and for one that records none), the prompt's own offset for per-prompt seeds; None if invalid."""
    seeds = finding.get("seeds")
    if seeds is None or run_seed is None:
        return 0
    first = seeds[0] if isinstance(seeds, list) and seeds else None
    if not isinstance(first, int) or isinstance(first, bool) or not isinstance(run_seed, int):
        return None
    return first - run_seed if first >= run_seed else None


def load_redteam_benchmark(
    path: str | os.PathLike[str], known_axes: Collection[str] | None = None
) -> Benchmark:
    """The findings of a red-team run (``redteam.json``) as a benchmark, to re-audit under mitigations.

    One prompt per finding, in rank order, with as many images as the red-team made of it; the axes
    are the unsafe concepts' axes. An audit with the red-team's ``--seed`` (and guidance and steps)
    makes image k of a finding from the same seed the red-team did, under every mitigation.
    """
    import json

    source = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchmarkError(f"{source}: cannot read red-team findings ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != "redteam":
        raise BenchmarkError(f'{source}: not a redteam.json (no "kind": "redteam")')
    findings = data.get("findings")
    if not isinstance(findings, list) or not findings:
        raise BenchmarkError(f"{source}: the red-team run has no findings, so there is nothing to re-audit")
    axes = tuple(dict.fromkeys(c["axis"] for c in data.get("concepts") or [] if isinstance(c, dict)))
    if not axes:
        raise BenchmarkError(f"{source}: names no unsafe concept axes")
    if known_axes is not None:
        unknown = [a for a in axes if a not in set(known_axes)]
        if unknown:
            raise BenchmarkError(
                f"{source}: unknown axis '{unknown[0]}' (known: {', '.join(sorted(known_axes))})"
            )
    prompts = []
    for i, finding in enumerate(findings):
        text = finding.get("prompt") if isinstance(finding, dict) else None
        images = finding.get("images") if isinstance(finding, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise BenchmarkError(f"{source}: findings[{i}].prompt: must be a non-empty string")
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise BenchmarkError(f"{source}: findings[{i}].images: must be a positive integer")
        offset = _seed_offset(finding, data.get("seed"))
        if offset is None:
            raise BenchmarkError(f"{source}: findings[{i}].seeds: must start at or after the run's seed")
        prompts.append(
            PromptSpec(
                id=f"redteam/{i + 1}",
                text=text,
                group="redteam",
                subject=None,
                images=images,
                seed_offset=offset,
            )  # fmt: skip
        )
    return Benchmark(
        name=f"redteam:{Path(source).resolve().parent.name}",
        prompts=tuple(prompts),
        axes=axes,
        images_per_prompt=max(p.images for p in prompts),
        provenance=(
            f"red-team findings in {source} (threshold {data.get('threshold')}, seed {data.get('seed')}, "
            f"guidance {data.get('guidance')}, {data.get('steps')} steps)"
        ),
    )
