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
class Deviation:
    """How the DeePMD pair style reports the committee's deviation (DP-GEN's ``use_relative`` /
    ``epsilon``, ``use_relative_v`` / ``epsilon_v``): absolute, or relative with that level."""

    relative_f: float | None = None
    relative_v: float | None = None


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
    nopbc: bool = False  # DP-GEN's model_devi_nopbc: open boundaries (molecules, clusters)
    neigh_one: int | None = None  # DP-GEN's lmp_neigh_modify_one
    deviation: Deviation = Deviation()


def pair_style(graphs: tuple[str, ...], out_freq: str | int, deviation: Deviation) -> str:
    """The DeePMD pair style writing the committee's deviations to ``model_devi.out``."""
    words = ["pair_style      deepmd", *graphs, "out_freq", str(out_freq), "out_file", DEVI]
    if deviation.relative_f is not None:
        words += ["relative", f"{deviation.relative_f:g}"]
    if deviation.relative_v is not None:
        words += ["relative_v", f"{deviation.relative_v:g}"]
    return " ".join(words)


def dump_lines(name: str, freq: str | int) -> list[str]:
    """The trajectory dump the candidates are read from (with forces, for f_avg_relative)."""
    return [f"dump            {name} all custom {freq} {TRAJ} id type x y z fx fy fz",
            f"dump_modify     {name} sort id"]


def input_text(task: MdTask) -> str:
    ens = ENSEMBLES[task.ensemble]
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
        "boundary        f f f" if task.nopbc else "boundary        p p p",
        "atom_style      atomic",
        "neighbor        1.0 bin",
        *([f"neigh_modify    one {task.neigh_one}"] if task.neigh_one else []),
        f"read_data       {CONF}",
        "change_box      all triclinic",
    ]
    lines += [f"mass            {i + 1} {m:g}" for i, m in enumerate(task.masses)]
    lines += [
        pair_style(task.graphs, "${THERMO_FREQ}", task.deviation),
        "pair_coeff      * *",
        "",
        "thermo_style    custom step temp pe ke etotal press vol lx ly lz xy xz yz",
        "thermo          ${THERMO_FREQ}",
        *dump_lines("1", "${DUMP_FREQ}"),
        "",
        f"velocity        all create ${{TEMP}} {task.velocity_seed} mom yes rot yes dist gaussian",
        ens.fix,
    ]
    if task.nopbc:  # keep the molecule still in its open box (as DP-GEN)
        lines += ["velocity        all zero linear", "fix             fm all momentum 1 linear 1 1 1"]
    lines += [
        f"timestep        {task.dt:g}",
        "run             ${NSTEPS} upto",
        "",
    ]
    return "\n".join(lines)
