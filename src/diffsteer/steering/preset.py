"""What to steer with, as plain data: the command-line options and the YAML preset share one type.

A preset names steering files (h-space vectors, noise directions, text-embedding offsets) with their
strengths, an optional fair-generation rule and two switches (safe generation, responsible prompt
following). It holds names, not tensors: `steering.steerer` resolves them against a model.

    # steering preset (diffsteer)
    hspace:
      - {name: woman, strength: 1.0}
    noise:
      - {name: dark, weight: 3}        # weight omitted: the file's recommended weight
    text:
      - {name: woman, weight: 1.0}
    fair:
      axes: [gender]
      method: hspace                    # hspace | noise
      target: {man: 0.5, woman: 0.5}    # omitted: uniform
    safe: false                         # apply every anti-concept h-space vector
    responsible: false                  # switch vectors on when the prompt asks for it
    directions: [my_vectors/]           # extra folders to search, relative to this file
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffsteer.steering.files import KINDS

FAIR_METHODS = ("hspace", "noise")
DEFAULT_FAIR_METHOD = "hspace"
# what a preset calls an item's strength, per steering kind (the YAML format; the file kinds' names)
STRENGTH_KEYS = {"hspace": "strength", "noise": "weight", "text": "weight"}
assert set(STRENGTH_KEYS) == set(KINDS)


class PresetError(ValueError):
    """A preset file or steering option that cannot be understood (one line, naming the field)."""


@dataclass(frozen=True)
class SteeringItem:
    """One steering file by name (or path) and its strength; ``None`` means the file's default."""

    name: str
    strength: float | None = None


@dataclass(frozen=True)
class FairSpec:
    axes: tuple[str, ...]
    method: str = DEFAULT_FAIR_METHOD
    target: dict[str, float] | None = None  # one target per axis is the common case: class -> share


@dataclass(frozen=True)
class SteeringSpec:
    hspace: tuple[SteeringItem, ...] = ()
    noise: tuple[SteeringItem, ...] = ()
    text: tuple[SteeringItem, ...] = ()
    fair: FairSpec | None = None
    safe: bool = False
    responsible: bool = False
    directions: tuple[str, ...] = field(default=())

    def items(self) -> list[tuple[str, SteeringItem]]:
        """Every fixed item with its file kind, kinds in the files' order."""
        return [(kind, item) for kind in KINDS for item in getattr(self, kind)]

    @property
    def is_empty(self) -> bool:
        return not (self.hspace or self.noise or self.text or self.fair or self.safe or self.responsible)

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready form (used in run identities and exported presets)."""
        d: dict[str, Any] = {}
        for kind in KINDS:
            items = getattr(self, kind)
            if items:
                key = STRENGTH_KEYS[kind]
                d[kind] = [
                    {"name": i.name, **({key: i.strength} if i.strength is not None else {})} for i in items
                ]
        if self.fair is not None:
            fair = asdict(self.fair)
            fair["axes"] = list(self.fair.axes)
            if fair["target"] is None:
                fair.pop("target")
            d["fair"] = fair
        if self.safe:
            d["safe"] = True
        if self.responsible:
            d["responsible"] = True
        if self.directions:
            d["directions"] = list(self.directions)
        return d

    def to_yaml(self) -> str:
        return "# diffsteer steering preset\n" + yaml.safe_dump(self.to_dict(), sort_keys=False)

    def merged(self, other: SteeringSpec) -> SteeringSpec:
        """This spec plus ``other``'s items (``other`` wins on fair; switches are or-ed)."""
        return SteeringSpec(
            hspace=self.hspace + other.hspace,
            noise=self.noise + other.noise,
            text=self.text + other.text,
            fair=other.fair or self.fair,
            safe=self.safe or other.safe,
            responsible=self.responsible or other.responsible,
            directions=self.directions + other.directions,
        )


def parse_item(text: str, *, option: str = "--hspace") -> SteeringItem:
    """``"woman"`` or ``"woman:0.5"`` or ``"path/to/woman.hspace.safetensors:2"``."""
    text = text.strip()
    if not text:
        raise PresetError(f"{option} needs a name, got an empty value")
    name, sep, value = text.rpartition(":")
    if sep and name and not value.startswith(("/", "\\")):
        try:
            return SteeringItem(name.strip(), float(value))
        except ValueError:
            raise PresetError(f"{option} {text}: strength '{value}' is not a number") from None
    return SteeringItem(text)


def spec_from_options(
    *,
    hspace: list[str] | tuple[str, ...] = (),
    noise: list[str] | tuple[str, ...] = (),
    text: list[str] | tuple[str, ...] = (),
    fair: str | None = None,
    fair_method: str = DEFAULT_FAIR_METHOD,
    fair_target: str | None = None,
    safe: bool = False,
    responsible: bool = False,
    directions: list[str] | tuple[str, ...] = (),
) -> SteeringSpec:
    """The steering the command-line options ask for (``fair`` is a comma list of axes)."""
    from diffsteer.steering.fair import parse_target

    fair_spec = None
    if fair:
        if fair_method not in FAIR_METHODS:
            raise PresetError(f"--fair-method must be one of {', '.join(FAIR_METHODS)}, got '{fair_method}'")
        axes = tuple(a.strip() for a in fair.split(",") if a.strip())
        target = parse_target(fair_target) if fair_target else None
        fair_spec = FairSpec(axes=axes, method=fair_method, target=target)
    elif fair_target:
        raise PresetError("--fair-target needs --fair AXIS")
    return SteeringSpec(
        hspace=tuple(parse_item(s, option="--hspace") for s in hspace),
        noise=tuple(parse_item(s, option="--noise-direction") for s in noise),
        text=tuple(parse_item(s, option="--text-offset") for s in text),
        fair=fair_spec,
        safe=safe,
        responsible=responsible,
        directions=tuple(str(d) for d in directions),
    )


def _items(raw: Any, kind: str, source: str) -> tuple[SteeringItem, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PresetError(f"{source}: '{kind}' must be a list")
    key = STRENGTH_KEYS[kind]
    out = []
    for i, item in enumerate(raw):
        where = f"{source}: {kind}[{i}]"
        if isinstance(item, str):
            out.append(parse_item(item, option=where))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise PresetError(f"{where} needs a 'name'")
        extra = set(item) - {"name", key}
        if extra:
            raise PresetError(f"{where}: unknown field(s) {sorted(extra)}; expected name, {key}")
        value = item.get(key)
        if value is not None and not isinstance(value, (int, float)):
            raise PresetError(f"{where}: {key} must be a number, got {value!r}")
        out.append(SteeringItem(item["name"].strip(), None if value is None else float(value)))
    return tuple(out)


def spec_from_dict(raw: Any, *, source: str = "preset", base_dir: Path | None = None) -> SteeringSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PresetError(f"{source}: a preset is a mapping of hspace, noise, text, fair, safe, responsible")
    known = {*KINDS, "fair", "safe", "responsible", "directions"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PresetError(f"{source}: unknown field(s) {unknown}; expected {sorted(known)}")
    fair = None
    if raw.get("fair") is not None:
        f = raw["fair"]
        if not isinstance(f, dict):
            raise PresetError(f"{source}: 'fair' must be a mapping with axes, method, target")
        axes = f.get("axes", f.get("axis"))
        axes = [axes] if isinstance(axes, str) else axes
        if not axes or not all(isinstance(a, str) for a in axes):
            raise PresetError(f"{source}: fair.axes must name at least one axis")
        method = f.get("method", DEFAULT_FAIR_METHOD)
        if method not in FAIR_METHODS:
            raise PresetError(
                f"{source}: fair.method must be one of {', '.join(FAIR_METHODS)}, got {method!r}"
            )
        target = f.get("target")
        if target is not None and (
            not isinstance(target, dict) or not all(isinstance(v, (int, float)) for v in target.values())
        ):
            raise PresetError(f"{source}: fair.target must map class names to shares")
        fair = FairSpec(
            tuple(axes), method, {str(k): float(v) for k, v in target.items()} if target else None
        )
    for switch in ("safe", "responsible"):
        if switch in raw and not isinstance(raw[switch], bool):
            raise PresetError(f"{source}: '{switch}' must be true or false")
    dirs = raw.get("directions") or []
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise PresetError(f"{source}: 'directions' must be a list of folders")
    if base_dir is not None:
        dirs = [str((base_dir / d).resolve()) if not Path(d).is_absolute() else d for d in dirs]

    def rebase(items: tuple[SteeringItem, ...]) -> tuple[SteeringItem, ...]:
        # a name that is a relative path is read relative to the preset, not the working directory
        if base_dir is None:
            return items
        out = []
        for it in items:
            candidate = base_dir / it.name
            out.append(SteeringItem(str(candidate.resolve()), it.strength) if candidate.is_file() else it)
        return tuple(out)

    return SteeringSpec(
        hspace=rebase(_items(raw.get("hspace"), "hspace", source)),
        noise=rebase(_items(raw.get("noise"), "noise", source)),
        text=rebase(_items(raw.get("text"), "text", source)),
        fair=fair,
        safe=bool(raw.get("safe", False)),
        responsible=bool(raw.get("responsible", False)),
        directions=tuple(dirs),
    )


def load_preset(path: Path | str) -> SteeringSpec:
    """Read a steering preset YAML file; one-line errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise PresetError(f"steering preset not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise PresetError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return spec_from_dict(raw, source=str(path), base_dir=path.parent)


def save_preset(spec: SteeringSpec, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.to_yaml())
    return path


def resolve_steering(preset: Path | str | None = None, **options: Any) -> SteeringSpec | None:
    """The steering a command asks for: a preset file (if any) plus the options; None when empty."""
    spec = spec_from_options(**options)
    if preset is not None:
        spec = load_preset(preset).merged(spec)
    # a spec with only --directions is kept: built-in mitigations (hspace-fair ...) search those folders
    return None if spec.is_empty and not spec.directions else spec
