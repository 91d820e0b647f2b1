"""init_surf on DP-GEN's layout: (1) slabs → elements placed → relaxation; (2) scale → elongate → perturb.

``<name>.<AAxBBxCC>/00.place_ele/surf-<hkl>/sys-*/POSCAR`` (relaxed: ``CONTCAR``) and
``01.scale_pert/surf-<hkl>/sys-*/scale-S/elong-E/00000k/POSCAR``: the configurations a run
param's ``sys_configs`` points at. Nothing is labeled (DP-GEN's init_surf labels nothing
either). The relaxations run through the ``fp`` machine with the ledger, so a killed run resumes.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import dpdata
import numpy as np
from ase import Atoms, io

from dpgen_ng.config.initsurf import InitSurfParams
from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.errors import StageError
from dpgen_ng.fp import Failure
from dpgen_ng.initbulk.bulk import InitRun, sys_name
from dpgen_ng.initbulk.crystal import compositions
from dpgen_ng.initbulk.perturb import perturbed_frames
from dpgen_ng.initsurf.slab import elongate, poscar_atoms, slab_for, surf_name, unit_cell
from dpgen_ng.initsurf.vacuum import elong_name
from dpgen_ng.io import replace_dir
from dpgen_ng.ledger import Ledger
from dpgen_ng.rng import stage_rng

log = logging.getLogger("dpgen_ng.init_surf")
PLACE, PERT = "00.place_ele", "01.scale_pert"
FRAMES_GLOB = "scale-*/elong-*/[0-9]*/POSCAR"  # under 01.scale_pert/surf-*/sys-*


def _rng(params: InitSurfParams, step: int, name: str) -> np.random.Generator:
    """A generator per (step, directory name): independent of the order of millers, scales, …"""
    return stage_rng(params.seed, 0, "init_surf", step, zlib.crc32(name.encode()))


def unit_atoms(params: InitSurfParams) -> Atoms:
    if params.poscar is not None:
        return poscar_atoms(params.poscar, params.elements)
    assert params.cell_type is not None and params.latt is not None
    return unit_cell(params.cell_type, params.latt)


def system_of(params: InitSurfParams, cell: np.ndarray, coords: np.ndarray,
              types: np.ndarray) -> dpdata.System:
    counts = [int(np.count_nonzero(types == i)) for i in range(len(params.elements))]
    return dpdata.System(data={
        "atom_names": list(params.elements), "atom_numbs": counts, "atom_types": np.asarray(types, dtype=int),
        "cells": np.asarray(cell, dtype=float)[None], "coords": np.asarray(coords, dtype=float)[None],
        "orig": np.zeros(3)})


def placed(params: InitSurfParams, slab: Atoms, rng: np.random.Generator) -> list[dpdata.System]:
    """A POSCAR's slab as it is; a lattice's slab once per composition of the elements (at least one
    atom each), the species on randomly shuffled sites (seeded), as DP-GEN places them."""
    if params.poscar is not None:
        types = np.array([params.elements.index(s) for s in slab.get_chemical_symbols()])
        return [system_of(params, slab.cell.array, slab.positions, types)]
    out = []
    for counts in compositions(len(slab), len(params.elements)):
        order = rng.permutation(len(slab))
        types = np.repeat(np.arange(len(params.elements)), counts)
        out.append(system_of(params, slab.cell.array, slab.positions[order], types))
    return out


def place(params: InitSurfParams, out: Path) -> tuple[list[str], dict[str, int]]:
    """Stage 1's structures: ``surf-*/POSCAR`` (the slab's sites) and ``surf-*/sys-*/POSCAR``.
    Returns the systems (``surf-*/sys-*``) and the layer count of each surface."""
    root = out / PLACE
    root.mkdir(parents=True, exist_ok=True)
    unit = unit_atoms(params)
    if params.poscar is None:
        io.write(root / "POSCAR.unit", unit, format="vasp", direct=True)
    paths, layers = [], {}
    for miller in params.millers:
        surf = surf_name(miller)
        slab, layers[surf] = slab_for(unit, miller, params.vacuum_min, params.layer_numb, params.z_min)
        slab = slab.repeat((params.super_cell[0], params.super_cell[1], 1))
        (root / surf).mkdir(exist_ok=True)
        io.write(root / surf / "POSCAR", slab, format="vasp", direct=False)
        for system in placed(params, slab, _rng(params, 1, surf)):
            rel = f"{surf}/{sys_name(system)}"
            (root / rel).mkdir(exist_ok=True)
            system.to("vasp/poscar", str(root / rel / "POSCAR"))
            paths.append(rel)
        log.info("%s: %d layer(s), %d atom(s), %d system(s)", surf, layers[surf], len(slab),
                 sum(p.startswith(surf + "/") for p in paths))
    return paths, layers


class SurfRun(InitRun):
    """The engine, the fp machine and the ledger of init_bulk, for the slab relaxations."""

    def __init__(self, params: InitSurfParams, workdir: Path, machines: MachineSettings,
                 ledger: Ledger) -> None:
        super().__init__(params, workdir, machines, ledger)  # type: ignore[arg-type]

    def relax_slabs(self, paths: list[str]) -> dict[str, Any]:
        """Relax every ``surf-*/sys-*`` in its directory; ``CONTCAR`` is the relaxed slab."""
        root = self.out / PLACE
        dirs = [root / p for p in paths]
        job = self.jobs["relax"]
        elements = list(self.params.elements)
        outcomes = self.dispatch("surf_relax", root, dirs, job, lambda d: job.write(
            dpdata.System(str(d / "POSCAR"), fmt="vasp/poscar", type_map=elements), d))
        report = {}
        for rel, d, res in zip(paths, dirs, outcomes):
            if isinstance(res, Failure):
                raise StageError(f"relaxation of {d} failed: {res.kind}: {res.detail}")
            if not (d / "CONTCAR").is_file():  # never rewrite the engine's own CONTCAR (resume)
                res.structure.to("vasp/poscar", str(d / "CONTCAR"))
            if not res.converged:
                log.warning("%s: relaxation stopped at relax_steps before reaching relax_fmax", rel)
            report[rel] = {"converged": bool(res.converged)}
        return report


def _frames(params: InitSurfParams, system: dpdata.System, dest: Path, rel: str) -> int:
    """``scale-S/POSCAR``, ``scale-S/elong-E/POSCAR`` and ``scale-S/elong-E/00000k/POSCAR`` of one
    system under ``dest``; returns the number of ``00000k`` structures."""
    count = 0
    cell0, coords0 = system["cells"][0], system["coords"][0]

    def write(d: Path, cell: np.ndarray, coords: np.ndarray) -> None:
        d.mkdir(parents=True, exist_ok=True)
        frame = system.copy()
        frame.data["cells"], frame.data["coords"] = cell[None], coords[None]
        frame.to("vasp/poscar", str(d / "POSCAR"))

    for scale in params.scale:
        scale_dir = dest / f"scale-{scale:.3f}"
        write(scale_dir, cell0 * scale, coords0 * scale)
        for elong in params.elongs:
            cell, coords = elongate(cell0 * scale, coords0 * scale, elong)
            write(scale_dir / elong_name(elong), cell, coords)
            rng = _rng(params, 2, f"{rel}/{scale_dir.name}/{elong_name(elong)}")
            frames = perturbed_frames(cell, coords, params.pert_numb, params.pert_box, params.pert_atom, rng)
            for k, (c, x) in enumerate(frames):
                write(scale_dir / elong_name(elong) / f"{k:06d}", c, x)
            count += len(frames)
    return count


def scale_perturb(params: InitSurfParams, out: Path, paths: list[str]) -> dict[str, int]:
    """Stage 2: ``01.scale_pert`` rebuilt as a whole (no structure of older settings stays)."""
    name = "POSCAR" if params.skip_relax else "CONTCAR"
    sources = {rel: out / PLACE / rel / name for rel in paths}
    missing = [str(s) for s in sources.values() if not s.is_file()]
    if missing:
        raise StageError(f"{missing[0]} is missing: run stage 1 (relaxation) with a MACHINE first, "
                         "or set skip_relax")
    counts: dict[str, int] = {}

    def fill(tmp: Path) -> None:
        for rel, src in sources.items():
            system = dpdata.System(str(src), fmt="vasp/poscar", type_map=list(params.elements))
            counts[rel] = _frames(params, system, tmp / rel, rel)

    replace_dir(out / PERT, fill)
    log.info("%d structure(s) in %s", sum(counts.values()), out / PERT)
    return counts


def init_surf(params: InitSurfParams, workdir: Path, machines: MachineSettings | None) -> dict[str, Any]:
    """Run the requested stages (1: slabs + relaxation, 2: scale/elongate/perturb); return a report."""
    workdir = Path(workdir).resolve()
    out = workdir / params.out_dir_name()
    for note in params.ignored:
        log.warning("%s", note)
    paths, layers = place(params, out)
    report: dict[str, Any] = {"out_dir": str(out), "layers": layers, "systems": paths,
                              "elongations": [round(e, 6) for e in params.elongs]}
    if params.ignored:
        report["ignored"] = list(params.ignored)
    relax = 1 in params.stages and not params.skip_relax
    if relax and machines is None:
        log.info("no MACHINE given: the slabs are written, not relaxed (as DP-GEN does)")
    elif relax:
        assert machines is not None
        with Ledger(workdir) as ledger:
            report["relax"] = SurfRun(params, workdir, machines, ledger).relax_slabs(paths)
    if 2 in params.stages:
        report["structures"] = scale_perturb(params, out, paths)
        report["sys_configs"] = [f"{params.out_dir_name()}/{PERT}/{surf_name(m)}/sys-*/{FRAMES_GLOB}"
                                 for m in params.millers]
    log.info("init_surf labels nothing: put the structures in a run param's sys_configs")
    return report
