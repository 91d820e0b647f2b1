"""A small strict schema engine: typed fields, path-aware one-line errors, nearest-key hints.

A section is a dict of :class:`Field`. ``parse_section`` checks a raw mapping against it:
keys starting with ``_`` are comments; a key DP-GEN knows but we do not support yet is an
explicit error; any other unknown key is an error naming its path and the nearest valid key.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dpgen_ng.errors import UserError

Parser = Callable[[Any, str], Any]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Field:
    parse: Parser
    default: Any = REQUIRED
    doc: str = ""
    aliases: tuple[str, ...] = ()


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if match:
        return f"did you mean '{match[0]}'?"
    return "valid keys: " + ", ".join(sorted(valid)[:12]) + (" ..." if len(valid) > 12 else "")


def parse_section(
    raw: Any,
    fields: Mapping[str, Field],
    path: str,
    unsupported: Mapping[str, str] | None = None,
    foreign: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Check ``raw`` against ``fields``; return {field name: parsed value} (defaults filled)."""
    if not isinstance(raw, Mapping):
        raise UserError(f"expected a mapping, got {type(raw).__name__}", path or "<top>")
    alias_of = {alias: name for name, f in fields.items() for alias in f.aliases}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise UserError(f"non-string key {key!r}", path or "<top>")
        if key.startswith("_"):
            continue
        name = alias_of.get(key, key)
        where = join(path, key)
        if name in fields:
            if name in out:
                raise UserError("key given twice (under an alias)", where, f"one of '{name}'")
            out[name] = fields[name].parse(value, where)
        elif unsupported and key in unsupported:
            raise UserError(f"DP-GEN key '{key}' is not supported yet", where, unsupported[key])
        elif foreign and key in foreign:
            raise UserError(f"key '{key}' does not apply here", where, foreign[key])
        else:
            raise UserError(f"unknown key '{key}'", where, nearest(key, list(fields)))
    for name, f in fields.items():
        if name not in out:
            if f.default is REQUIRED:
                raise UserError(f"missing required key '{name}'", path or "<top>", f.doc)
            out[name] = f.default() if callable(f.default) else f.default
    return out


def key_statuses(fields: Mapping[str, Field], unsupported: Mapping[str, str] | None = None) -> dict[str, str]:
    """{key: what happens to it here} for a section (docs/dpgen-keys.md is made from these)."""
    out = {name: "supported" for name in fields}
    out.update({alias: f"supported (alias of {name})" for name, f in fields.items() for alias in f.aliases})
    out.update({key: f"refused: {why}" for key, why in (unsupported or {}).items()})
    return out


# ----- value parsers -------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return type(value).__name__


def as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"got {_type_name(value)} {value!r}", where, "a string")
    return value


TYPE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")


def type_name(value: Any, where: str) -> str:
    """An atom type name (type_map): letters, digits, '_' — it is written into LAMMPS, POSCAR
    and engine inputs."""
    text = as_str(value, where)
    if not TYPE_NAME.fullmatch(text):
        raise UserError(f"type name {text!r}", where, "an element symbol such as \"C\" (letters, digits, "
                        "'_'; at most 16 characters)")
    return text


def element(value: Any, where: str) -> str:
    """A chemical symbol (the structures are built from it)."""
    from ase.data import atomic_numbers

    text = as_str(value, where)
    if text not in atomic_numbers or text == "X":
        raise UserError(f"{text!r} is not an element", where, "a chemical symbol such as \"Cu\"")
    return text


def as_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"got {_type_name(value)} {value!r}", where, "true or false")
    return value


def as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UserError(f"got {_type_name(value)} {value!r}", where, "an integer")
    return value


def as_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"got {_type_name(value)} {value!r}", where, "a number")
    if not math.isfinite(value):
        raise UserError(f"got {value!r}", where, "a finite number")
    return float(value)


def as_dict(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"got {_type_name(value)}", where, "a mapping")
    return dict(value)


def positive(parser: Parser, strict: bool = True) -> Parser:
    def parse(value: Any, where: str) -> Any:
        v = parser(value, where)
        if v < 0 or (strict and v == 0):
            raise UserError(f"got {v!r}", where, "a positive number" if strict else "≥ 0")
        return v

    return parse


def in_range(parser: Parser, lo: float, hi: float) -> Parser:
    def parse(value: Any, where: str) -> Any:
        v = parser(value, where)
        if not lo <= v <= hi:
            raise UserError(f"got {v!r}", where, f"a value in [{lo}, {hi}]")
        return v

    return parse


def list_of(parser: Parser, min_len: int = 0) -> Parser:
    def parse(value: Any, where: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"got {_type_name(value)}", where, "a list")
        if len(value) < min_len:
            raise UserError(f"list has {len(value)} items", where, f"at least {min_len}")
        return [parser(v, join(where, i)) for i, v in enumerate(value)]

    return parse


def one_of(*choices: str) -> Parser:
    def parse(value: Any, where: str) -> str:
        if value not in choices:
            raise UserError(f"got {value!r}", where, "one of " + ", ".join(map(repr, choices)))
        return value

    return parse


def str_or_list_of_str(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    return list_of(as_str)(value, where)


def either(*parsers: Parser, expected: str) -> Parser:
    def parse(value: Any, where: str) -> Any:
        for p in parsers:
            try:
                return p(value, where)
            except UserError:
                continue
        raise UserError(f"got {_type_name(value)} {value!r}", where, expected)

    return parse


def batch_size(value: Any, where: str) -> int | str:
    """A DeePMD batch size: a positive int, "auto" or "auto:N"."""
    if isinstance(value, str):
        if value == "auto" or (value.startswith("auto:") and value[5:].isdigit()):
            return value
        raise UserError(f"got {value!r}", where, "a positive integer, 'auto' or 'auto:N'")
    return positive(as_int)(value, where)

