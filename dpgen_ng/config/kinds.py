"""Which of DP-GEN's param files a mapping is (run, init_bulk, init_surf, init_reaction, autotest
old and new, simplify), told by the keys only that kind has, and which ``dpgen`` command reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgen_ng.errors import UserError


@dataclass(frozen=True)
class Kind:
    name: str
    command: str  # the dpgen command that reads it ("" = none of ours yet)
    marks: tuple[str, ...]  # top-level keys only this kind has
    why_not: str = ""  # for a kind we do not read yet: what to do instead


KINDS = (
    Kind("simplify", "simplify", ("pick_data", "init_pick_number", "iter_pick_number")),
    Kind("init_surf", "init_surf", ("layer_numb", "z_min", "vacuum_max", "vacuum_resol", "vacuum_numb",
                                    "millers", "head_ratio", "mid_point")),
    Kind("init_reaction", "", ("reaxff", "qmkeywords", "dataset_size"),
         "dpgen init_reaction is not supported yet"),
    Kind("old autotest", "", ("conf_dir", "key_id", "task_type"),
         "this is the autotest format of DP-GEN < 0.8, which DP-GEN no longer reads either: write "
         "structures / interaction / relaxation / properties (see docs/test.md)"),
    Kind("autotest", "test", ("structures", "interaction", "properties", "relaxation")),
    Kind("run", "run", ("model_devi_jobs", "fp_style", "default_training_param", "training", "numb_models",
                        "sys_configs")),
    Kind("init_bulk", "init_bulk", ("stages", "cell_type", "from_poscar", "super_cell", "pert_numb",
                                    "init_fp_style")),
)


def param_kind(raw: dict[str, Any]) -> tuple[Kind, str]:
    """The kind of a param mapping and the key that told it; a run param when nothing tells."""
    for kind in KINDS:
        for key in kind.marks:
            if key in raw:
                return kind, key
    return KINDS[[k.name for k in KINDS].index("run")], ""


def expect_kind(raw: dict[str, Any], command: str, path: Path) -> Kind:
    """The kind of ``raw``; a one-line error when ``dpgen <command>`` cannot read it (None = any
    kind we read)."""
    kind, key = param_kind(raw)
    if not key:  # nothing tells: the command's own checks will say what is missing
        return kind
    told = f"{path} is a DP-GEN {kind.name} param (it has '{key}')"
    if not kind.command:
        raise UserError(f"{told}: {kind.why_not}", key)
    if command and kind.command != command:
        raise UserError(f"{told}, which `dpgen {command}` does not read", key,
                        f"`dpgen {kind.command} {path.name} ...`")
    return kind
