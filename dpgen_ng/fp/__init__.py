"""Labelers (the ``fp`` stage), registered by name and looked up from ``fp_style``.

Adding an engine = adding one module here with a :class:`Labeler` subclass decorated with
``@register``, and importing it below.
"""

from __future__ import annotations

from types import MappingProxyType

from dpgen_ng.fp.base import FAILURE_KINDS, Failure, Labeler

__all__ = ["FAILURE_KINDS", "Failure", "Labeler", "labeler_class", "labeler_keys",
           "labeler_names", "register"]

_registry: dict[str, type[Labeler]] = {}


def register(name: str):  # noqa: ANN201 - decorator
    """Class decorator: make a labeler available as ``fp_style: <name>`` (write-once)."""

    def deco(cls: type[Labeler]) -> type[Labeler]:
        if name in _registry:
            raise RuntimeError(f"labeler {name!r} registered twice")
        cls.name = name
        _registry[name] = cls
        return cls

    return deco


def labeler_names() -> tuple[str, ...]:
    return tuple(sorted(_registry))


def labeler_class(name: str) -> type[Labeler]:
    return _registry[name]


def labeler_keys() -> MappingProxyType:
    """{style: its top-level param keys}."""
    return MappingProxyType({name: tuple(cls.KEYS) for name, cls in _registry.items()})


# The engines (import registers them).
from dpgen_ng.fp import cp2k as _cp2k  # noqa: E402,F401
from dpgen_ng.fp import xtb as _xtb  # noqa: E402,F401
