"""Labelers (the ``fp`` stage), registered by name and looked up from ``fp_style``.

Adding an engine = adding one module here with a :class:`Labeler` subclass decorated with
``@register``, and importing it below.
"""

from __future__ import annotations

from types import MappingProxyType

from dpgen_ng.errors import UserError
from dpgen_ng.fp.base import FAILURE_KINDS, Failure, Labeler

__all__ = ["FAILURE_KINDS", "Failure", "Labeler", "labeler_class", "labeler_key_names", "labeler_keys",
           "labeler_names", "register", "split_labeler_keys"]

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


def _own_keys(cls: type[Labeler]) -> dict[str, str]:
    """{key or alias: key} of the top-level keys a labeler owns (DP-GEN's ``fp_params`` is the
    alias of ``user_fp_params`` for CP2K and Quantum ESPRESSO)."""
    out = {name: name for name in cls.KEYS}
    out.update({alias: name for name, f in cls.KEYS.items() for alias in f.aliases})
    return out


def labeler_names() -> tuple[str, ...]:
    return tuple(sorted(_registry))


def labeler_class(name: str) -> type[Labeler]:
    return _registry[name]


def labeler_key_names() -> dict[str, tuple[str, ...]]:
    """{style: every top-level key it owns, aliases included}."""
    return {name: tuple(_own_keys(cls)) for name, cls in sorted(_registry.items())}


def labeler_keys() -> MappingProxyType:
    """{style: its top-level param keys}."""
    return MappingProxyType({name: tuple(cls.KEYS) for name, cls in _registry.items()})


def split_labeler_keys(raw: dict, style: str, style_key: str) -> tuple[object, dict, dict[str, str]]:
    """Parse the keys the labeler ``style`` owns out of ``raw``.

    Returns its settings, the rest of ``raw``, and {key: why} for keys owned by other labelers
    (so that such a key is reported as misplaced rather than unknown).
    """
    if style not in _registry:
        raise UserError(f"unknown {style_key} '{style}'", style_key, "one of " + ", ".join(labeler_names()))
    cls = _registry[style]
    mine = _own_keys(cls)
    own: dict[str, object] = {}
    for key, name in mine.items():
        if key in raw:
            if name in own:
                raise UserError("key given twice (under an alias)", key, f"one of '{name}' or its alias")
            own[name] = raw[key]
    settings = cls.parse_settings(own, "")
    rest = {k: v for k, v in raw.items() if k not in mine}
    owners: dict[str, list[str]] = {}
    for other, other_cls in _registry.items():
        for k in _own_keys(other_cls):
            if k not in mine:
                owners.setdefault(k, []).append(f"'{other}'")
    foreign = {k: f"it belongs to {style_key} {' or '.join(o)}, not '{style}'" for k, o in owners.items()}
    return settings, rest, foreign


# The engines (import registers them).
from dpgen_ng.fp import abacus as _abacus  # noqa: E402,F401
from dpgen_ng.fp import cp2k as _cp2k  # noqa: E402,F401
from dpgen_ng.fp import emt as _emt  # noqa: E402,F401
from dpgen_ng.fp import gaussian as _gaussian  # noqa: E402,F401
from dpgen_ng.fp import pwscf as _pwscf  # noqa: E402,F401
from dpgen_ng.fp import siesta as _siesta  # noqa: E402,F401
from dpgen_ng.fp import vasp as _vasp  # noqa: E402,F401
from dpgen_ng.fp import xtb as _xtb  # noqa: E402,F401
