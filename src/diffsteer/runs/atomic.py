"""Publish a file so that a reader never sees half of it, even after a kill or a full disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable, so a committed row never points at a lost file."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(
    path: Path | str, data: bytes, *, tmp_name: str | None = None, sync_dir: bool = True
) -> Path:
    """Write ``data`` to a hidden temporary file beside ``path``, flush it, then rename it over ``path``.

    ``tmp_name``: the temporary file's name (default: hidden, per process), e.g. one a store knows to
    sweep up after a kill. ``sync_dir=False`` leaves the directory's fsync to a caller that renames
    many files and syncs once.
    """
    path = Path(path)
    tmp = path.with_name(tmp_name or f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_dir:
        fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))
