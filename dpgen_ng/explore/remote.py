"""Trajectories that stay on the machine the MD ran on (an SSH machine).

Each MD task indexes its trajectory where it ran (the byte offset of every frame, then the file's
size: ``all.lammpstrj.index``) and moves the trajectory out of dpdispatcher's job directory (which
is removed once the job is harvested) to ``<remote_root>/dpgen_ng.trajectories/<run id>/<iter>/
<task>/``. Only the deviations, the logs and the index come back. Selection then reads the
frames it picked, and frame 0 and the last frame of each trajectory it looks into, as byte ranges
over SFTP (:class:`RemoteFiles`); ``model_devi_clean_traj`` removes the kept files there.

``trajectories.json`` in the model_devi directory says where an iteration's trajectories are.
"""

from __future__ import annotations

import inspect
import json
import logging
import shlex
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.errors import StageError
from dpgen_ng.explore.lammps import TRAJ
from dpgen_ng.io import atomic_write_json
from dpgen_ng.ledger import Ledger

INDEX = f"{TRAJ}.index"
LOCATION_FILE = "trajectories.json"
KEEP_DIR = "dpgen_ng.trajectories"
SSH_CONTEXTS = {"sshcontext", "ssh"}
log = logging.getLogger("dpgen_ng.explore")


def keeps_remote(machine: dict[str, Any], need_whole: bool) -> bool:
    """Whether this MD machine's trajectories stay where they ran: SSH machines, unless every frame
    is needed here (``model_devi_f_avg_relative`` reads every force)."""
    return str(machine.get("context_type", "")).lower() in SSH_CONTEXTS and not need_whole


def keep_dir(machine: dict[str, Any], ledger: Ledger, iter_stage: str) -> str:
    """Where this iteration's trajectories are kept: one directory per run under remote_root."""
    run_id = ledger.meta_get("run_id")
    if run_id is None:
        run_id = uuid.uuid4().hex[:12]
        ledger.meta_set("run_id", run_id)
    return f"{str(machine['remote_root']).rstrip('/')}/{KEEP_DIR}/{run_id}/{iter_stage}"


def keep_command(command: str, task_dir: str) -> str:
    """``command`` followed by: index the trajectory, move it to ``task_dir``; LAMMPS' exit code is
    the task's."""
    dest = shlex.quote(task_dir)
    return (f"{command}; _dpgen_md=$?; if [ -f {TRAJ} ]; then "
            f"{{ grep -b $'^[ \\t]*ITEM: TIMESTEP' {TRAJ} | cut -d: -f1; wc -c < {TRAJ}; }} > {INDEX}"
            f" && mkdir -p {dest} && mv -f {TRAJ} {dest}/; fi; exit $_dpgen_md")


def write_location(md_dir: Path, machine: dict[str, Any], where: str) -> None:
    profile = machine.get("remote_profile") or {}
    atomic_write_json(md_dir / LOCATION_FILE, {
        "host": profile.get("hostname"), "port": profile.get("port", 22),
        "username": profile.get("username"), "dir": where})


def read_location(md_dir: Path) -> dict[str, Any] | None:
    path = md_dir / LOCATION_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_index(path: Path) -> np.ndarray:
    """The frame offsets and the file size an MD task wrote next to its trajectory."""
    try:
        values = [int(v) for v in path.read_text().split()]
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: the trajectory's index is missing or unreadable ({exc})") from None
    if not values:
        raise StageError(f"{path} is empty: the trajectory's size is missing")
    return np.array(values, dtype=np.int64)


class RemoteFiles:
    """An SSH link (dpdispatcher's session, from the machine's ``remote_profile``) to read byte
    ranges of the kept trajectories and to remove them. Counts the bytes it reads."""

    def __init__(self, machine: dict[str, Any]) -> None:
        from dpdispatcher.contexts.ssh_context import SSHSession

        accepted = set(inspect.signature(SSHSession.__init__).parameters) - {"self"}
        profile = {k: v for k, v in (machine.get("remote_profile") or {}).items() if k in accepted}
        self.host = profile.get("hostname", "?")
        self.session = SSHSession(**profile)
        self.bytes_read = 0

    def read_ranges(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes ``[start, end)`` of each range of a remote file, in one request."""
        try:
            with self.session.sftp.open(path, "rb") as fh:
                out = list(fh.readv([(a, b - a) for a, b in ranges]))
        except OSError as exc:
            raise StageError(f"{self.host}:{path}: cannot read the kept trajectory ({exc})") from None
        self.bytes_read += sum(len(b) for b in out)
        return out

    def remove(self, path: str) -> None:
        _, stdout, stderr = self.session.exec_command(f"rm -rf {shlex.quote(path)}")
        if stdout.channel.recv_exit_status() != 0:
            log.warning("%s: could not remove %s: %s", self.host, path, stderr.read().decode()[-300:])

    def close(self) -> None:
        self.session.close()
