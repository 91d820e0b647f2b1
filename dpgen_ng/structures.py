"""Reading the structure files a user names (POSCARs), with a one-line error naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dpgen_ng.errors import UserError


def read_poscar(path: Path, where: str, type_map: list[str] | None = None) -> Any:
    """A dpdata System from a VASP POSCAR; a file dpdata cannot read is a :class:`UserError`."""
    import dpdata

    try:
        return dpdata.System(str(path), fmt="vasp/poscar", type_map=type_map)
    except Exception as exc:  # noqa: BLE001 - dpdata raises many kinds on a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot read {path} as a POSCAR ({first})", where, "a VASP POSCAR file") from None
