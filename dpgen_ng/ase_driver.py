"""Runs inside a task: single point, relaxation or MD of ``POSCAR`` with an ASE calculator.

    python3 -m dpgen_ng.ase_driver driver.json

``driver.json``: {"calc": "emt" | "xtb", "mode": "single" | "relax" | "md", "options": {...},
"calc_params": {...}}. Every evaluated frame goes to ``traj.extxyz`` (energy, forces, stress when
the calculator has it); a relaxation also writes ``CONTCAR``; ``result.json`` says how it ended.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, io, units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from dpgen_ng.xtbio import METHOD_FLAGS, read_engrad

TRAJ = "traj.extxyz"
RESULT = "result.json"


class XtbCalculator(Calculator):
    """GFN-xTB through the ``xtb`` program, one process per evaluation (molecular, no PBC)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, command: str = "xtb", method: str = "gfn2", charge: int = 0, uhf: int = 0,
                 accuracy: float = 1.0, etemp: float = 300.0, max_iterations: int = 250,
                 workdir: str = "xtb.calc") -> None:
        super().__init__()
        self.argv = [*command.split(), "calc.xyz", *METHOD_FLAGS[method].split(), "--grad",
                     "--chrg", str(charge), "--uhf", str(uhf), "--acc", f"{accuracy:g}",
                     "--etemp", f"{etemp:g}", "--iterations", str(max_iterations)]
        self.dir = Path(workdir)

    def calculate(self, atoms: Atoms | None = None, properties: Any = None,
                  system_changes: Any = all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.dir.mkdir(exist_ok=True)
        (self.dir / "calc.engrad").unlink(missing_ok=True)
        io.write(self.dir / "calc.xyz", self.atoms, format="xyz")
        proc = subprocess.run(self.argv, cwd=self.dir, capture_output=True, text=True)
        if proc.returncode != 0:
            (self.dir / "xtb.out").write_text(proc.stdout)
            raise RuntimeError(f"xtb failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        energy, grad = read_engrad(self.dir / "calc.engrad")
        self.results = {"energy": energy * units.Hartree, "forces": -grad * units.Hartree / units.Bohr}


def _emt(params: dict[str, Any]) -> Calculator:
    from ase.calculators.emt import EMT

    return EMT()


CALCULATORS = {"emt": _emt, "xtb": lambda params: XtbCalculator(**params)}
PERIODIC = {"emt": True, "xtb": False}  # xtb runs molecular: no stress, no cell relaxation


def _snapshot(atoms: Atoms, with_stress: bool) -> Atoms:
    frame = atoms.copy()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if with_stress:
        results["stress"] = atoms.get_stress()
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def run(task_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    atoms = io.read(task_dir / "POSCAR", format="vasp")
    atoms.calc = CALCULATORS[spec["calc"]](spec.get("calc_params", {}))
    opts = spec.get("options", {})
    periodic = PERIODIC[spec["calc"]]
    frames: list[Atoms] = []
    mode = spec["mode"]
    result: dict[str, Any] = {"mode": mode}
    if mode == "single":
        frames.append(_snapshot(atoms, periodic))
    elif mode == "relax":
        from ase.constraints import FixAtoms
        from ase.filters import FrechetCellFilter
        from ase.optimize import BFGS

        pos, shape, vol = opts.get("dofs", (True, True, True))
        shape, vol = shape and periodic, vol and periodic
        if not pos:  # atoms keep their fractional coordinates (they follow the cell)
            atoms.set_constraint(FixAtoms(indices=list(range(len(atoms)))))
        target = atoms
        if shape or vol:
            target = FrechetCellFilter(atoms, hydrostatic_strain=not shape, constant_volume=not vol)
        opt = BFGS(target, logfile=str(task_dir / "relax.log"))
        opt.attach(lambda: frames.append(_snapshot(atoms, periodic)))
        result["converged"] = bool(opt.run(fmax=opts.get("relax_fmax", 0.05),
                                           steps=opts.get("relax_steps", 200)))
        result["steps"] = opt.get_number_of_steps()
        atoms.set_constraint()
        io.write(task_dir / "CONTCAR", atoms, format="vasp", direct=True)
    elif mode == "md":
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

        rng = np.random.default_rng(opts.get("seed", 0))
        temp = opts.get("md_temp", 300.0)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temp, rng=rng)
        Stationary(atoms)
        dyn = Langevin(atoms, opts.get("md_dt", 1.0) * units.fs, temperature_K=temp,
                       friction=opts.get("md_friction", 0.01) / units.fs, rng=rng, fixcm=False)
        dyn.attach(lambda: frames.append(_snapshot(atoms, periodic)), interval=1)
        nsteps = int(opts.get("md_nstep", 10))
        dyn.run(nsteps)
        frames = frames[1:]  # ASE also calls observers before the first step
        result["steps"] = nsteps
    else:
        raise ValueError(f"unknown mode {mode!r}")
    io.write(task_dir / TRAJ, frames, format="extxyz")
    result["frames"] = len(frames)
    return result


def main(argv: list[str]) -> int:
    spec_path = Path(argv[0]).absolute()  # not resolve(): inputs may be links to elsewhere
    result = run(spec_path.parent, json.loads(spec_path.read_text()))
    (spec_path.parent / RESULT).write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
