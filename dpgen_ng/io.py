"""Atomic writes and config-file reading."""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dpgen_ng.errors import UserError

T = TypeVar("T")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part.

    With ``sync`` the file and its directory entry are on disk when this returns. Without it (a
    make step's many task files) they are flushed later by :func:`sync_filesystem`, before the
    step's manifest is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync:
        _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, sync: bool = True) -> None:
    atomic_write_bytes(path, text.encode(), sync=sync)


def atomic_write_json(path: Path, obj: Any, *, sync: bool = True) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n", sync=sync)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the file system that holds ``path`` (Linux ``syncfs``: one call
    instead of an fsync per file; ``sync`` where it is missing)."""
    syncfs = _syncfs()
    if syncfs is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            if syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    os.sync()


def append_line_synced(path: Path, line: str) -> None:
    """Append one line and fsync it (used for record.dpgen)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def load_config(path: Path, parse: Callable[[dict[str, Any]], T], one_line: bool = True) -> T:
    """Read a JSON/YAML file and parse it; a :class:`UserError` then names the file too. With
    ``one_line`` (parameter files: their strings are copied into engine inputs), a string with a
    control character (a newline could start a directive of its own) is refused."""
    raw = read_config_file(path)
    try:
        if one_line:
            check_one_line(raw)
        return parse(raw)
    except UserError as exc:
        raise exc.in_file(Path(path).name) from None


CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tabs are fine


def check_one_line(data: Any) -> None:
    """Every string (keys too) in ``data`` is one line of printable text."""
    todo: list[tuple[Any, str]] = [(data, "")]
    while todo:
        item, where = todo.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if isinstance(k, str) and k.startswith("_") and len(k) > 1:
                    continue  # a comment ("_comment", "_idx"): dropped, never copied anywhere
                here = f"{where}.{k}" if where else str(k)
                if isinstance(k, str) and (m := CONTROL.search(k)):
                    raise UserError(f"a control character {m.group()!r} in a key", repr(here),
                                    "keys on one line")
                todo.append((v, here))
        elif isinstance(item, list):
            todo += [(v, f"{where}[{i}]") for i, v in enumerate(item)]
        elif isinstance(item, str) and (m := CONTROL.search(item)):
            raise UserError(f"a control character {m.group()!r} in a string", where,
                            "text on one line (strings are copied into engine inputs)")


MAX_DEPTH = 64  # no input of ours nests deeper; deeper ones would exhaust the parsers' stack


def _depth(data: Any) -> int:
    """How deeply dicts and lists nest (iteratively: the data may be deep)."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, d = todo.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, d)
            if d <= MAX_DEPTH:
                todo += [(x, d + 1) for x in item]
    return deepest


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML file into a dict; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", str(path), "a JSON or YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"not UTF-8 text (byte {exc.start})", str(path), "a JSON or YAML file") from None
    except OSError as exc:
        raise UserError(f"cannot read it ({exc.strerror})", str(path),
                        "a readable JSON or YAML file") from None
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{path}:{mark.line + 1}" if mark else str(path)
                raise UserError("invalid YAML", where, str(getattr(exc, "problem", exc))) from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError("invalid JSON", f"{path}:{exc.lineno}:{exc.colno}", exc.msg) from None
    except RecursionError:
        raise UserError("nested too deeply", str(path), f"at most {MAX_DEPTH} levels") from None
    if _depth(data) > MAX_DEPTH:
        raise UserError("nested too deeply", str(path), f"at most {MAX_DEPTH} levels")
    if not isinstance(data, dict):
        raise UserError("top level is not a mapping", str(path), "a JSON object / YAML mapping")
    return data


def tail(path: Path, lines: int = 5) -> str:
    """The last non-empty lines of a text file, joined with ' | ' (for one-line reports)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    rows = [r.strip() for r in text.splitlines() if r.strip()]
    return " | ".join(rows[-lines:])


def relink(link: Path, target: Path | str) -> None:
    """Make ``link`` a symlink to ``target``, replacing whatever is there."""
    link = Path(link)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def replace_dir(dest: Path, fill: Callable[[Path], None],
                keep: Callable[[Path, Path], bool] | None = None) -> bool:
    """Build a directory with ``fill(tmp)`` beside ``dest``, then swap it in (never half-written).

    With ``keep``, an existing ``dest`` for which ``keep(dest, tmp)`` holds stays as it is (with
    whatever else it holds) and the new build is dropped. Returns whether ``dest`` was replaced.
    """
    dest = Path(dest)
    tmp, old = dest.with_name(f".{dest.name}.tmp"), dest.with_name(f".{dest.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    fill(tmp)
    if keep is not None and dest.is_dir() and keep(dest, tmp):
        shutil.rmtree(tmp)
        return False
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return True
