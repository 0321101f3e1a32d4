"""Finding steering files by name: ``--hspace woman`` means ``woman.hspace.safetensors`` in a folder.

Folders are searched in order: the ones the user names, then ``./directions`` (where ``diffsteer
learn`` writes by default), then the folder a bundled model registered with its steering files
(:mod:`diffsteer.registry`). A name that is an existing file path is used as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from diffsteer.registry import bundled_model
from diffsteer.steering.files import ANTI_CONCEPT_KIND, KINDS, SUFFIX, SteeringFileError, read_steering_file

DEFAULT_DIR = Path("directions")


@dataclass(frozen=True)
class SteeringEntry:
    """One steering file found in a folder, with the metadata needed to pick it."""

    name: str
    kind: str
    path: Path
    axis: str | None
    class_name: str | None
    concept: str


def bundled_steering_dir(model: str) -> Path | None:
    """The folder of steering files shipped with a bundled model, if it registered one."""
    entry = bundled_model(model)
    return entry.steering_folder() if entry is not None else None


def _parse_name(path: Path) -> tuple[str, str] | None:
    name = path.name
    if not name.endswith(SUFFIX):
        return None
    stem = name[: -len(SUFFIX)]
    base, dot, kind = stem.rpartition(".")
    if not dot or kind not in KINDS or not base:
        return None
    return base, kind


class SteeringLibrary:
    def __init__(self, folders: Sequence[Path | str]) -> None:
        seen: list[Path] = []
        for f in folders:
            p = Path(f)
            if p not in seen:
                seen.append(p)
        self.folders = seen

    @classmethod
    def for_model(cls, model: str, extra: Sequence[Path | str] = ()) -> SteeringLibrary:
        folders: list[Path | str] = [*extra, DEFAULT_DIR]
        bundled = bundled_steering_dir(model)
        if bundled is not None:
            folders.append(bundled)
        return cls(folders)

    def entries(self, kind: str | None = None) -> list[SteeringEntry]:
        """Every steering file in the folders (first folder wins for a repeated name and kind)."""
        found: dict[tuple[str, str], SteeringEntry] = {}
        for folder in self.folders:
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                parsed = _parse_name(path)
                if parsed is None or (kind is not None and parsed[1] != kind) or parsed in found:
                    continue
                try:
                    _, meta = read_steering_file(path)
                except SteeringFileError:
                    continue  # an unreadable file is reported when it is asked for by name
                found[parsed] = SteeringEntry(
                    name=parsed[0],
                    kind=parsed[1],
                    path=path,
                    axis=meta.get("axis") or None,
                    class_name=meta.get("class_name") or None,
                    concept=meta.get("concept", parsed[0]),
                )
        return list(found.values())

    def find(self, name: str, kind: str) -> Path:
        """The file for ``name`` (a path, or a name searched in the folders); a clear error otherwise."""
        direct = Path(name)
        if direct.suffix == SUFFIX or direct.is_file():
            if not direct.is_file():
                raise SteeringFileError(f"steering file not found: {direct}")
            return direct
        for folder in self.folders:
            path = folder / f"{name}.{kind}{SUFFIX}"
            if path.is_file():
                return path
        available = sorted(e.name for e in self.entries(kind))
        where = ", ".join(str(f) for f in self.folders)
        hint = f"available: {', '.join(available)}" if available else "none found"
        raise SteeringFileError(f"no {kind} steering file named '{name}' in {where} ({hint})")

    def for_axis(self, axis: str, classes: Sequence[str], kind: str) -> dict[str, Path]:
        """One file per class of ``axis``: by metadata (axis, class_name), else by the class's name."""
        by_meta = {e.class_name: e.path for e in self.entries(kind) if e.axis == axis and e.class_name}
        by_name = {e.name: e.path for e in self.entries(kind)}
        out: dict[str, Path] = {}
        for cls in classes:
            path = by_meta.get(cls) or by_name.get(cls)
            if path is not None:
                out[cls] = path
        missing = [c for c in classes if c not in out]
        if missing:
            where = ", ".join(str(f) for f in self.folders)
            raise SteeringFileError(
                f"fair generation on '{axis}' needs a {kind} file for every class; missing "
                f"{', '.join(missing)} in {where} (learn them with `diffsteer learn {kind}`)"
            )
        return out

    def anti_concepts(self, kind: str = ANTI_CONCEPT_KIND) -> list[Path]:
        """Steering files of ``kind`` for anti-concepts (named ``anti-*``), applied by safe generation."""
        return [e.path for e in self.entries(kind) if e.name.startswith("anti-")]
