"""DP-GEN's exploration switches of a run param: open boundaries, relative deviations, per-model
activation functions, merged trajectories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpgen_ng.config.fields import Field, as_bool, as_float, as_int, as_str, positive
from dpgen_ng.errors import UserError
from dpgen_ng.explore.lammps import ENSEMBLES, Deviation


def _activations(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """DP-GEN's ``model_devi_activation_func``: per model a name (descriptor and fitting net) or
    a pair [descriptor, fitting net]."""
    from deepmd.common import VALID_ACTIVATION

    if not isinstance(value, list) or not value:
        raise UserError(f"got {value!r}", where, "a list with one activation function (or a pair) per model")
    out = []
    for i, item in enumerate(value):
        pair = [item, item] if isinstance(item, str) else item
        if not isinstance(pair, list) or len(pair) != 2:
            raise UserError(f"got {item!r}", f"{where}[{i}]", "a name, or [descriptor, fitting_net] names")
        for j, name in enumerate(pair):
            as_str(name, f"{where}[{i}]")
            if name not in VALID_ACTIVATION:
                at = f"{where}[{i}]" + ("" if isinstance(item, str) else f"[{j}]")
                raise UserError(f"unknown activation function {name!r}", at,
                                "one of " + ", ".join(sorted(VALID_ACTIVATION)))
        out.append((pair[0], pair[1]))
    return tuple(out)


EXPLORE_FIELDS = {
    "model_devi_nopbc": Field(as_bool, default=False, doc="open boundaries in MD and in the labeled data"),
    "model_devi_f_avg_relative": Field(as_bool, default=False,
                                       doc="force deviations divided by the task's RMS force"),
    "use_relative": Field(as_bool, default=False, doc="relative force deviation (DeePMD's 'relative')"),
    "epsilon": Field(positive(as_float), default=None, doc="its level (eV/Å)"),
    "use_relative_v": Field(as_bool, default=False, doc="relative virial deviation ('relative_v')"),
    "epsilon_v": Field(positive(as_float), default=None, doc="its level (eV)"),
    "model_devi_activation_func": Field(_activations, default=None,
                                        doc="per model: an activation function, or [descriptor, fitting]"),
    "lmp_neigh_modify_one": Field(positive(as_int), default=None,
                                  doc="LAMMPS' 'neigh_modify one N': the most neighbours of one atom"),
    "model_devi_merge_traj": Field(as_bool, default=False,
                                   doc="accepted either way: we always keep one trajectory file per task"),
}


@dataclass(frozen=True)
class ExploreOptions:
    nopbc: bool = False
    f_avg_relative: bool = False
    deviation: Deviation = Deviation()
    activation: tuple[tuple[str, str], ...] | None = None
    neigh_one: int | None = None

    def as_json(self) -> dict[str, Any]:
        act = None if self.activation is None else [list(a) for a in self.activation]
        return {"model_devi_nopbc": self.nopbc, "model_devi_f_avg_relative": self.f_avg_relative,
                "relative_f": self.deviation.relative_f, "relative_v": self.deviation.relative_v,
                "model_devi_activation_func": act, "lmp_neigh_modify_one": self.neigh_one}


def explore_options(p: dict[str, Any]) -> ExploreOptions:
    """The switches of a parsed param mapping, checked against each other and the jobs."""
    levels = []
    for use, eps in (("use_relative", "epsilon"), ("use_relative_v", "epsilon_v")):
        if p[use] and p[eps] is None:
            raise UserError(f"{use} is true but {eps} is missing", eps, "the level added to the force/virial "
                            "magnitude in the denominator (DeePMD's 'relative' value)")
        levels.append(p[eps] if p[use] else None)
    act = p["model_devi_activation_func"]
    if act is not None and len(act) != p["numb_models"]:
        raise UserError(f"{len(act)} entries for {p['numb_models']} models", "model_devi_activation_func",
                        "one per model (numb_models)")
    if p["model_devi_nopbc"]:
        for j, job in enumerate(p["model_devi_jobs"]):
            if job.template is None and ENSEMBLES[job.ensemble].needs_press:
                raise UserError(f"ensemble '{job.ensemble}' changes the box; open boundaries have none",
                                f"model_devi_jobs[{j}].ensemble", "nvt or nve with model_devi_nopbc")
    return ExploreOptions(p["model_devi_nopbc"], p["model_devi_f_avg_relative"], Deviation(*levels), act,
                          p["lmp_neigh_modify_one"])
