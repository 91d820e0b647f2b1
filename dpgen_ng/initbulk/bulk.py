"""init_bulk on DP-GEN's layout: place → (1) relax → (2) scale/perturb → (3) AIMD → (4) collect.

``<name>.<AAxBBxCC>/00.place_ele/sys-*/POSCAR`` (relaxed: ``CONTCAR``),
``01.scale_pert/sys-*/scale-S/00000k/POSCAR``, AIMD (or, without stage 3, single-point label)
tasks in ``02.md/sys-*/scale-S/00000k/`` and the collected data in ``02.md/sys-*/deepmd`` — the
paths DP-GEN params point at. Every task runs through the ``fp`` machine with the same ledger and
rc files as ``dpgen run``, so a killed init_bulk resumes without redoing finished tasks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import dpdata

from dpgen_ng.config.init import InitBulkParams
from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.errors import StageError
from dpgen_ng.fp import Failure, labeler_class
from dpgen_ng.fp.base import JobKind, Labeler
from dpgen_ng.initbulk.crystal import place_elements
from dpgen_ng.initbulk.perturb import perturbed_frames
from dpgen_ng.io import atomic_write_json, replace_dir
from dpgen_ng.ledger import Ledger
from dpgen_ng.rng import draw_seed, stage_rng

log = logging.getLogger("dpgen_ng.init_bulk")
MD_MANIFEST = "md.json"  # in 02.md/sys-*: which tasks are AIMD runs (stage 3)


def sys_name(system: dpdata.System) -> str:
    return "sys-" + "-".join(f"{n:04d}" for n in system["atom_numbs"])


def place(params: InitBulkParams, out: Path) -> list[str]:
    """Write ``00.place_ele/sys-*/POSCAR`` for every system; return their names."""
    if params.poscar is not None:
        system = dpdata.System(str(params.poscar), fmt="vasp/poscar", type_map=list(params.elements))
        extra = set(system["atom_names"]) - set(params.elements)
        if extra:
            raise StageError(f"{params.poscar} has elements {sorted(extra)} not in 'elements'")
        systems = [system.replicate(params.super_cell)]
    else:
        rng = stage_rng(params.seed, 0, "init_bulk", 100)
        systems = [s for _, s in place_elements(params.cell_type, params.latt, params.super_cell,
                                                params.elements, rng)]
    names = []
    for system in systems:
        name = sys_name(system)
        (out / "00.place_ele" / name).mkdir(parents=True, exist_ok=True)
        system.to("vasp/poscar", str(out / "00.place_ele" / name / "POSCAR"))
        names.append(name)
    return names


class InitRun:
    """One init_bulk run: the settings, the engine, the machine, the ledger."""

    def __init__(self, params: InitBulkParams, workdir: Path, machines: MachineSettings | None,
                 ledger: Ledger) -> None:
        self.params = params
        self.workdir = workdir
        self.machines = machines
        self.ledger = ledger
        self.out = workdir / params.out_dir_name()
        self.engine: Labeler = labeler_class(params.fp_style)(params.fp_settings, params.elements)
        command = machines["fp"].command if machines else params.fp_style
        python = machines["fp"].python if machines else None
        self.jobs = self.engine.jobs({**params.options, "command": command, "python": python})

    def dispatch(self, stage: str, work_base: Path, dirs: list[Path], job: JobKind,
                 write: Any) -> list[Any]:
        """Write each task (``write(task_dir)``), run them all, return each parsed outcome."""
        specs = []
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            write(d)
            specs.append(TaskSpec(str(d.relative_to(work_base)), job.command(self.machines["fp"].command),
                                  job.forward, job.backward, job.outlog, job.errlog))
        Dispatcher(self.workdir, self.machines["fp"], self.ledger).run(
            0, f"init_{stage}", work_base, specs, allow_failures=True)
        return [self.engine.result(work_base / s.path, job) for s in specs]

    def relax(self, names: list[str]) -> dict[str, Any]:
        dirs = [self.out / "00.place_ele" / n for n in names]
        job = self.jobs["relax"]
        outcomes = self.dispatch("relax", self.out / "00.place_ele", dirs, job,
                                 lambda d: job.write(dpdata.System(str(d / "POSCAR"), fmt="vasp/poscar",
                                                                   type_map=list(self.params.elements)), d))
        report = {}
        for d, res in zip(dirs, outcomes):
            if isinstance(res, Failure):
                raise StageError(f"relaxation of {d} failed: {res.kind}: {res.detail}")
            if not (d / "CONTCAR").is_file():  # never rewrite the engine's own CONTCAR: a resumed run
                res.structure.to("vasp/poscar", str(d / "CONTCAR"))  # must build bit-identical inputs
            converged = res.converged
            if not converged:
                log.warning("%s: relaxation stopped at relax_steps before reaching relax_fmax", d.name)
            report[d.name] = {"converged": bool(converged)}
        return report

    def scale_perturb(self, name: str) -> list[Path]:
        src = self.out / "00.place_ele" / name / ("POSCAR" if self.params.skip_relax else "CONTCAR")
        if not src.is_file():
            raise StageError(f"{src} is missing: run stage 1 (relax) first, or set skip_relax")
        system = dpdata.System(str(src), fmt="vasp/poscar", type_map=list(self.params.elements))
        dirs = []
        for s_idx, scale in enumerate(self.params.scale):
            rng = stage_rng(self.params.seed, 0, "init_bulk", s_idx)
            frames = perturbed_frames(system["cells"][0] * scale, system["coords"][0] * scale,
                                      self.params.pert_numb, self.params.pert_box, self.params.pert_atom, rng)
            for k, (cell, coords) in enumerate(frames):
                d = self.out / "01.scale_pert" / name / f"scale-{scale:.3f}" / f"{k:06d}"
                d.mkdir(parents=True, exist_ok=True)
                frame = system.copy()
                frame.data["cells"] = cell[None]
                frame.data["coords"] = coords[None]
                frame.to("vasp/poscar", str(d / "POSCAR"))
                dirs.append(d)
        log.info("%s: %d structure(s) in %s", name, len(dirs), self.out / "01.scale_pert" / name)
        return dirs

    def _sources(self, name: str) -> list[Path]:
        found = sorted((self.out / "01.scale_pert" / name).glob("scale-*/[0-9]*/POSCAR"))
        if not found:
            raise StageError(f"nothing under {self.out / '01.scale_pert' / name}: run stage 2 first")
        return found

    def md(self, name: str) -> None:
        """Stage 3: an AIMD run of ``md_nstep`` steps from every perturbed structure."""
        md_root = self.out / "02.md" / name
        sources = self._sources(name)
        dirs = [md_root / p.parent.parent.name / p.parent.name for p in sources]
        rng = stage_rng(self.params.seed, 0, "init_bulk", 300)
        seeds = {d: draw_seed(rng) for d in dirs}
        atomic_write_json(md_root / MD_MANIFEST, {"tasks": [str(d.relative_to(md_root)) for d in dirs],
                                                  "md_nstep": self.params.md_nstep})

        def write(d: Path) -> None:
            frame = dpdata.System(str(sources[dirs.index(d)]), fmt="vasp/poscar",
                                  type_map=list(self.params.elements))
            job = self.engine.jobs({**self.params.options, "seed": seeds[d],
                                    "command": self.machines["fp"].command,
                                    "python": self.machines["fp"].python})["md"]
            job.write(frame, d)

        self.dispatch("md", md_root, dirs, self.jobs["md"], write)

    def collect(self, name: str) -> dict[str, int]:
        """Stage 4: complete, converged AIMD frames (or, without AIMD, single-point labels)."""
        md_root = self.out / "02.md" / name
        manifest = md_root / MD_MANIFEST
        good: list[dpdata.LabeledSystem] = []
        dropped = 0
        if manifest.is_file():
            job = self.jobs["md"]
            for rel in json.loads(manifest.read_text())["tasks"]:
                res = self.engine.result(md_root / rel, job)  # a failure unless every step is there
                if isinstance(res, Failure):
                    log.warning("%s: AIMD left out (%s: %s)", md_root / rel, res.kind, res.detail)
                    dropped += 1
                    continue
                good.append(res)
        else:
            sources = self._sources(name)
            dirs = [md_root / p.parent.parent.name / p.parent.name for p in sources]
            job = self.jobs["single"]
            outcomes = self.dispatch("label", md_root, dirs, job, lambda d: job.write(
                dpdata.System(str(sources[dirs.index(d)]), fmt="vasp/poscar",
                              type_map=list(self.params.elements)), d))
            for d, res in zip(dirs, outcomes):
                if isinstance(res, Failure):
                    log.warning("label of %s failed: %s: %s", d, res.kind, res.detail)
                    dropped += 1
                else:
                    good.append(res)
        if not good:
            raise StageError(f"nothing to collect for {name}: every task failed or is incomplete")
        data = good[0].copy()
        for s in good[1:]:
            data.append(s)
        data = data.sub_system(range(min(data.get_nframes(), self.params.coll_ndata)))
        dest = md_root / "deepmd"
        replace_dir(dest, lambda tmp: data.to("deepmd/npy", str(tmp), set_size=max(data.get_nframes(), 1)))
        log.info("%s: %d frame(s) collected in %s (%d task(s) left out)", name, data.get_nframes(), dest,
                 dropped)
        return {"frames": int(data.get_nframes()), "tasks_left_out": dropped}


def init_bulk(params: InitBulkParams, workdir: Path, machines: MachineSettings | None) -> dict:
    """Run the requested stages; return a report of what was made."""
    workdir = Path(workdir).resolve()
    out = workdir / params.out_dir_name()
    names = place(params, out)
    report: dict[str, Any] = {"out_dir": str(out), "systems": names}
    runs_jobs = any(s in params.stages for s in (1, 3, 4))
    if runs_jobs and machines is None:
        log.info("no MACHINE given: only the structures are written (as DP-GEN does)")
    with Ledger(workdir) as ledger:
        run = InitRun(params, workdir, machines, ledger)
        if 1 in params.stages and machines is not None:
            report["relax"] = run.relax(names)
        if 2 in params.stages:
            report["structures"] = {n: len(run.scale_perturb(n)) for n in names}
        if machines is None:
            return report
        if 3 in params.stages:
            for n in names:
                run.md(n)
        if 4 in params.stages:
            report["collected"] = {n: run.collect(n) for n in names}
            report["data"] = [str(out / "02.md" / n / "deepmd") for n in names]
    return report
