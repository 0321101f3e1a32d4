"""The file-kind registry: the one table from a steering file's kind to the class that reads it.

Everything else (the steerer, the library, sweeps, calibration, the studio) goes through
:class:`~diffsteer.steering.method.SteeringMethod` and never switches on the kind's name.
"""

from __future__ import annotations

from pathlib import Path

from diffsteer.steering.files import KINDS, SteeringFileError, read_steering_file
from diffsteer.steering.hspace import HSpaceVector
from diffsteer.steering.method import SteeringMethod
from diffsteer.steering.noise import NoiseDirection
from diffsteer.steering.text_embedding import TextOffset

METHODS: dict[str, type[SteeringMethod]] = {
    cls.kind: cls for cls in (HSpaceVector, NoiseDirection, TextOffset)
}
assert tuple(METHODS) == KINDS, "every file kind needs its class, in the files' order"


def method_class(kind: str) -> type[SteeringMethod]:
    """The class of steering files of ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return METHODS[kind]
    except KeyError:
        raise ValueError(f"unknown steering kind '{kind}'; expected one of {', '.join(METHODS)}") from None


def load_method(path: Path | str, kind: str | None = None) -> SteeringMethod:
    """Read a steering file of any kind (the file says which); with ``kind``, refuse any other."""
    _, metadata = read_steering_file(path)
    found = metadata["diffsteer_kind"]
    if kind is not None and found != kind:
        raise SteeringFileError(f"{path} holds a '{found}' steering file, not a {kind} one")
    return method_class(found).load(path)
