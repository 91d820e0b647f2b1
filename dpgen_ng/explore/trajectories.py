"""The MD trajectories of an iteration, as selection reads them: here, or kept on the SSH machine
the MD ran on (:mod:`dpgen_ng.explore.remote`)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import dpdata

from dpgen_ng.errors import StageError
from dpgen_ng.explore import lammps
from dpgen_ng.explore.remote import (
    INDEX,
    LOCATION_FILE,
    RemoteFiles,
    keeps_remote,
    read_index,
    read_location,
)
from dpgen_ng.explore.traj import Dump

log = logging.getLogger("dpgen_ng.explore")


class Trajectories:
    """The MD trajectories of this iteration's tasks: each indexed once (lazily), and only the
    frames asked for are read (:class:`~dpgen_ng.explore.traj.Dump`). When the model_devi stage
    kept them on its SSH machine, the frames are read there as byte ranges, through one SSH link
    (from ``machine``, the model_devi machine's settings); :meth:`close` ends it and logs how many
    bytes came back."""

    def __init__(self, md_dir: Path, md_tasks: list[dict[str, Any]], type_map: tuple[str, ...],
                 machine: dict[str, Any] | None = None) -> None:
        self.md_dir, self.md_tasks, self.type_map = md_dir, md_tasks, list(type_map)
        self._cache: dict[int, Dump] = {}
        self.location = read_location(md_dir)
        self._machine = machine or {}
        self._link: RemoteFiles | None = None

    def __call__(self, task: int) -> Dump:
        if task not in self._cache:
            path = self.md_tasks[task]["path"]
            if self.location is None:
                self._cache[task] = Dump(self.md_dir / path / lammps.TRAJ, self.type_map)
            else:
                if self._link is None:
                    self._link = self._connect()
                remote = f"{self.location['dir']}/{path}/{lammps.TRAJ}"
                bounds = read_index(self.md_dir / path / INDEX)
                self._cache[task] = Dump(remote, self.type_map,
                                         functools.partial(self._link.read_ranges, remote), bounds)
        return self._cache[task]

    def _connect(self) -> RemoteFiles:
        loc = self.location or {}
        if not keeps_remote(self._machine, need_whole=False):
            raise StageError(
                f"the trajectories of {self.md_dir} are kept on {loc.get('host')}:{loc.get('dir')} "
                f"({LOCATION_FILE}), and the model_devi machine is no longer an SSH machine: give "
                "it back its SSHContext and remote_profile to read them")
        return RemoteFiles(self._machine)

    def frame(self, task: int, row: int) -> dpdata.System | None:
        """Frame ``row`` of a task's trajectory (None past its end: a truncated trajectory)."""
        traj = self(task)
        return traj.frames([row]) if row < traj.get_nframes() else None

    def close(self) -> None:
        if self._link is None:
            return
        total = sum(read_index(p)[-1] for t in self.md_tasks
                    if (p := self.md_dir / t["path"] / INDEX).is_file())
        log.info("read %d byte(s) of the %d trajectory byte(s) kept on %s:%s (%d trajectories "
                 "opened)", self._link.bytes_read, total, self._link.host, self.location["dir"],
                 len(self._cache))
        self._link.close()
        self._link = None
