"""``dpgen collect``: every iteration's labels (``iter.*/02.fp/data.SSS``) and the initial data of
a run gathered into one data set: deepmd/npy directories (``init.III``, ``sys.KEY``) or one HDF5
file, as DP-GEN's ``dpgen collect`` lays them out (KEY: the system index, or with ``merge`` the
chemical formula)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dpdata

from dpgen_ng.config.fields import as_str, list_of
from dpgen_ng.data import expand_systems
from dpgen_ng.errors import UserError
from dpgen_ng.io import read_config_file, replace_dir
from dpgen_ng.rng import stage_rng


@dataclass(frozen=True)
class Collected:
    name: str  # init.III or sys.KEY
    system: dpdata.LabeledSystem
    source: str


def _init_data(job_dir: Path, raw: dict[str, Any], param: Path) -> list[Collected]:
    prefix = as_str(raw.get("init_data_prefix", "") or "", "init_data_prefix")
    out = []
    for i, rel in enumerate(list_of(as_str)(raw.get("init_data_sys", []), "init_data_sys")):
        root = Path(os.path.join(prefix, rel)) if prefix else Path(rel)
        root = root if root.is_absolute() else job_dir / root
        systems = expand_systems(root) if root.is_dir() else []
        if not systems:
            raise UserError(f"no deepmd/npy data under {root}", f"init_data_sys[{i}] ({param.name})",
                            "the initial data the run trained on")
        merged = _read(systems[0])
        for s in systems[1:]:
            merged.append(_read(s))
        out.append(Collected(f"init.{i:03d}", merged, str(rel)))
    return out


def _read(path: Path) -> dpdata.LabeledSystem:
    return dpdata.LabeledSystem(str(path), fmt="deepmd/npy")


def _iteration_data(job_dir: Path, merge: bool) -> list[Collected]:
    groups: dict[str, Collected] = {}
    for data_dir in sorted(job_dir.glob("iter.[0-9]*/02.fp/data.[0-9][0-9][0-9]")):
        for sys_dir in expand_systems(data_dir):
            system = _read(sys_dir)
            key = system.formula if merge else data_dir.name.split(".")[1]
            if key in groups:
                groups[key].system.append(system)
            else:
                groups[key] = Collected(f"sys.{key}", system, str(sys_dir.relative_to(job_dir)))
    return [groups[k] for k in sorted(groups)]


def collect(job_dir: Path, output: Path, param: Path, merge: bool = False, shuffle: bool = False,
            hdf5: bool = False, seed: int = 1) -> list[Collected]:
    """Write the collected set to ``output`` (a new directory, or with ``hdf5`` a new .h5 file);
    returns what was written. Nothing is written when anything is wrong."""
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise UserError(f"{job_dir} is not a directory", "JOB_DIR", "the work dir of a dpgen run")
    if output.exists() and (output.is_file() or any(output.iterdir())):
        raise UserError(f"{output} exists and is not empty", "OUTPUT",
                        "a new path (collected labels are never written over other files)")
    param = param if param.is_absolute() else job_dir / param
    sets = _init_data(job_dir, read_config_file(param), param) + _iteration_data(job_dir, merge)
    if not sets:
        raise UserError(f"no labels under {job_dir}/iter.*/02.fp and no init_data_sys", "JOB_DIR",
                        "the work dir of a dpgen run that labeled frames")
    if shuffle:  # the iteration sets only (as DP-GEN), each by one seeded permutation
        rng = stage_rng(seed, 0, "collect")
        sets = [s if s.name.startswith("init.") else
                Collected(s.name, s.system.sub_system(rng.permutation(s.system.get_nframes())), s.source)
                for s in sets]
    if hdf5:
        _write_hdf5(output, sets)
    else:
        if output.is_dir():
            output.rmdir()
        replace_dir(output, lambda tmp: _write_npy(tmp, sets))
    return sets


def _write_npy(tmp: Path, sets: list[Collected]) -> None:
    tmp.mkdir(parents=True)
    for s in sets:
        s.system.to("deepmd/npy", str(tmp / s.name), set_size=s.system.get_nframes())


def _write_hdf5(output: Path, sets: list[Collected]) -> None:
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.unlink(missing_ok=True)
    import h5py

    with h5py.File(tmp, "w") as f:
        for s in sets:
            s.system.to("deepmd/hdf5", f.create_group(s.name))
    if output.is_dir():
        shutil.rmtree(output)
    os.replace(tmp, output)
