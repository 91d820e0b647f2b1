"""DP-GEN's ``init.json`` vocabulary for ``dpgen init_bulk`` (the parts implemented so far)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_float,
    as_int,
    as_str,
    in_range,
    list_of,
    parse_section,
    positive,
)
from dpgen_ng.errors import UserError
from dpgen_ng.fp import labeler_names, split_labeler_keys
from dpgen_ng.io import load_config

STAGE_NAMES = {1: "relax", 2: "scale/perturb", 3: "AIMD", 4: "collect (label + deepmd/npy)"}
SUPPORTED_STAGES = (2, 4)

UNSUPPORTED = {
    "cell_type": "building crystals from cell_type/latt is not supported yet; use from_poscar",
    "latt": "building crystals from cell_type/latt is not supported yet; use from_poscar",
    "potcars": "VASP is not supported yet as init_fp_style; use xtb or cp2k",
    "relax_incar": "the relax stage (1) is not supported yet",
    "md_incar": "the AIMD stage (3) is not supported yet",
    "relax_kpt": "the relax stage (1) is not supported yet",
    "md_kpt": "the AIMD stage (3) is not supported yet",
    "layer_numb": "init_surf is not supported yet",
    "vacuum_max": "init_surf is not supported yet",
}

_FIELDS = {
    "stages": Field(list_of(in_range(as_int, 1, 4), min_len=1), doc="stages to run, e.g. [2, 4]"),
    "elements": Field(list_of(as_str, min_len=1), doc="element names (the type map)"),
    "from_poscar": Field(as_bool, default=False),
    "from_poscar_path": Field(as_str, default=None),
    "super_cell": Field(list_of(positive(as_int), min_len=3), default=lambda: [1, 1, 1]),
    "scale": Field(list_of(positive(as_float), min_len=1), default=lambda: [1.0]),
    "skip_relax": Field(as_bool, default=False),
    "pert_numb": Field(positive(as_int, strict=False), default=0),
    "pert_box": Field(positive(as_float, strict=False), default=0.0),
    "pert_atom": Field(positive(as_float, strict=False), default=0.0),
    "md_nstep": Field(positive(as_int), default=None),
    "coll_ndata": Field(positive(as_int), default=10**7),
    "init_fp_style": Field(as_str, default="xtb"),
    "seed": Field(positive(as_int, strict=False), default=1),
}


@dataclass(frozen=True)
class InitBulkParams:
    stages: tuple[int, ...]
    elements: tuple[str, ...]
    poscar: Path
    super_cell: tuple[int, int, int]
    scale: tuple[float, ...]
    skip_relax: bool
    pert_numb: int
    pert_box: float
    pert_atom: float
    coll_ndata: int
    fp_style: str
    fp_settings: Any
    seed: int

    def out_dir_name(self) -> str:
        a, b, c = self.super_cell
        return f"{self.poscar.name}.{a:02d}x{b:02d}x{c:02d}"

    def effective(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["poscar"] = str(self.poscar)
        out["fp_settings"] = self.fp_settings.as_json()
        return out


def parse_init_params(raw: dict[str, Any], base_dir: Path) -> InitBulkParams:
    style = raw.get("init_fp_style", "xtb")
    if not isinstance(style, str):
        raise UserError(f"got {style!r}", "init_fp_style", "one of " + ", ".join(labeler_names()))
    fp_settings, rest, foreign = split_labeler_keys(raw, style, "init_fp_style")
    p = parse_section(rest, _FIELDS, "", UNSUPPORTED, foreign)
    for s in p["stages"]:
        if s not in SUPPORTED_STAGES:
            raise UserError(f"stage {s} ({STAGE_NAMES[s]}) is not supported yet", "stages",
                            "stages from " + str(list(SUPPORTED_STAGES)))
    if not p["from_poscar"] or not p["from_poscar_path"]:
        raise UserError("only from_poscar is supported yet", "from_poscar",
                        "from_poscar: true and from_poscar_path: <POSCAR file>")
    if 2 in p["stages"] and not p["skip_relax"]:
        raise UserError("skip_relax is false but the relax stage is not supported yet", "skip_relax",
                        "true (the POSCAR is scaled and perturbed as given)")
    if len(p["super_cell"]) != 3:
        raise UserError(f"{len(p['super_cell'])} values", "super_cell", "three integers")
    poscar = Path(p["from_poscar_path"]).expanduser()
    if not poscar.is_absolute():
        poscar = base_dir / poscar
    if not poscar.is_file():
        raise UserError(f"{poscar} not found", "from_poscar_path", "a POSCAR file")
    return InitBulkParams(
        stages=tuple(sorted(set(p["stages"]))), elements=tuple(p["elements"]), poscar=poscar,
        super_cell=tuple(p["super_cell"]), scale=tuple(p["scale"]), skip_relax=p["skip_relax"],
        pert_numb=p["pert_numb"], pert_box=p["pert_box"], pert_atom=p["pert_atom"],
        coll_ndata=p["coll_ndata"], fp_style=style, fp_settings=fp_settings, seed=p["seed"],
    )


def load_init_params(path: Path, workdir: Path) -> InitBulkParams:
    return load_config(path, lambda raw: parse_init_params(raw, workdir))
