"""The LAMMPS explorer: ``input.lammps`` for one (conf, T, P, ensemble) with in-situ model deviation."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

INPUT = "input.lammps"
CONF = "conf.lmp"
DEVI = "model_devi.out"
TRAJ = "all.lammpstrj"
LOG = "model_devi.log"


@dataclass(frozen=True)
class Ensemble:
    needs_press: bool
    fix: str


_NPT = "fix 1 all npt temp ${{TEMP}} ${{TEMP}} ${{TAU_T}} {coupling} ${{PRES}} ${{PRES}} ${{TAU_P}}"

ENSEMBLES = MappingProxyType({
    "nvt": Ensemble(False, "fix 1 all nvt temp ${TEMP} ${TEMP} ${TAU_T}"),
    "nve": Ensemble(False, "fix 1 all nve"),
    "npt": Ensemble(True, _NPT.format(coupling="iso")),
    "npt-i": Ensemble(True, _NPT.format(coupling="iso")),
    "npt-a": Ensemble(True, _NPT.format(coupling="aniso")),
    "npt-t": Ensemble(True, _NPT.format(coupling="tri")),
})


@dataclass(frozen=True)
class MdTask:
    """Everything one LAMMPS exploration task depends on."""

    ensemble: str
    temp: float
    press: float | None
    nsteps: int
    trj_freq: int
    dt: float
    taut: float
    taup: float
    masses: tuple[float, ...]
    graphs: tuple[str, ...]
    velocity_seed: int


def input_text(task: MdTask) -> str:
    ens = ENSEMBLES[task.ensemble]
    graphs = " ".join(task.graphs)
    lines = [
        f"variable        NSTEPS          equal {task.nsteps}",
        f"variable        THERMO_FREQ     equal {task.trj_freq}",
        f"variable        DUMP_FREQ       equal {task.trj_freq}",
        f"variable        TEMP            equal {task.temp:g}",
    ]
    if ens.needs_press:
        lines.append(f"variable        PRES            equal {task.press:g}")
    lines += [
        f"variable        TAU_T           equal {task.taut:g}",
        f"variable        TAU_P           equal {task.taup:g}",
        "",
        "units           metal",
        "boundary        p p p",
        "atom_style      atomic",
        "neighbor        1.0 bin",
        f"read_data       {CONF}",
        "change_box      all triclinic",
    ]
    lines += [f"mass            {i + 1} {m:g}" for i, m in enumerate(task.masses)]
    lines += [
        f"pair_style      deepmd {graphs} out_freq ${{THERMO_FREQ}} out_file {DEVI}",
        "pair_coeff      * *",
        "",
        "thermo_style    custom step temp pe ke etotal press vol lx ly lz xy xz yz",
        "thermo          ${THERMO_FREQ}",
        f"dump            1 all custom ${{DUMP_FREQ}} {TRAJ} id type x y z fx fy fz",
        "dump_modify     1 sort id",
        "",
        f"velocity        all create ${{TEMP}} {task.velocity_seed} mom yes rot yes dist gaussian",
        ens.fix,
        f"timestep        {task.dt:g}",
        "run             ${NSTEPS} upto",
        "",
    ]
    return "\n".join(lines)
