"""DP-GEN's ``init.json`` vocabulary for ``dpgen init_bulk`` (the parts implemented so far)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_float,
    as_int,
    as_str,
    element,
    in_range,
    list_of,
    one_of,
    parse_section,
    positive,
)
from dpgen_ng.config.fields import (
    key_statuses as fields_key_statuses,
)
from dpgen_ng.errors import UserError
from dpgen_ng.fp import labeler_class, labeler_key_names, labeler_names, split_labeler_keys
from dpgen_ng.initbulk.crystal import CELLS
from dpgen_ng.io import load_config
from dpgen_ng.structures import read_poscar

STAGE_NAMES = {1: "relax", 2: "scale/perturb", 3: "AIMD", 4: "collect"}
STAGE_JOB = {1: "relax", 3: "md"}  # the job kind a stage needs from the engine

UNSUPPORTED = {
    "atom_masses": "it is an ABACUS init_bulk key; init_bulk with ABACUS is not supported yet",
    **{k: "it is an init_surf key: run this param with dpgen init_surf"
       for k in ("layer_numb", "z_min", "vacuum_max", "vacuum_min", "vacuum_resol", "vacuum_numb", "millers",
                 "head_ratio", "mid_point")},
}
# DP-GEN's init_bulk engines (init_fp_style, any case; VASP by default) that we do not run yet
INIT_NOT_YET = {"abacus": "init_bulk with ABACUS is not supported yet (its relaxation and AIMD "
                          "inputs); single points with fp_style abacus are"}
DEFAULT_INIT_FP_STYLE = "vasp"  # DP-GEN's default

_FIELDS = {
    "stages": Field(list_of(in_range(as_int, 1, 4), min_len=1), doc="stages to run, e.g. [1, 2, 3, 4]"),
    "elements": Field(list_of(element, min_len=1), doc="element names (the type map of the data)"),
    "type_map": Field(list_of(element, min_len=1), default=None,
                      doc="DP-GEN's type map of the data; here it must equal elements"),
    "cell_type": Field(one_of(*CELLS), default=None),
    "latt": Field(positive(as_float), default=None),
    "from_poscar": Field(as_bool, default=False),
    "from_poscar_path": Field(as_str, default=None),
    "super_cell": Field(list_of(positive(as_int), min_len=3), default=lambda: [1, 1, 1]),
    "scale": Field(list_of(positive(as_float), min_len=1), default=lambda: [1.0]),
    "skip_relax": Field(as_bool, default=False),
    "pert_numb": Field(positive(as_int, strict=False), default=0),
    "pert_box": Field(positive(as_float, strict=False), default=0.0),
    "pert_atom": Field(positive(as_float, strict=False), default=0.0),
    "md_nstep": Field(positive(as_int), default=10),
    "coll_ndata": Field(positive(as_int), default=10**7),
    "init_fp_style": Field(as_str, default=DEFAULT_INIT_FP_STYLE),
    "relax_fmax": Field(positive(as_float), default=0.05, doc="eV/Å"),
    "relax_steps": Field(positive(as_int), default=200),
    "relax_cell": Field(as_bool, default=True),
    "md_temp": Field(positive(as_float), default=300.0, doc="K"),
    "md_dt": Field(positive(as_float), default=1.0, doc="fs"),
    "seed": Field(positive(as_int, strict=False), default=1),
}


@dataclass(frozen=True)
class InitBulkParams:
    stages: tuple[int, ...]
    elements: tuple[str, ...]
    poscar: Path | None
    cell_type: str | None
    latt: float | None
    super_cell: tuple[int, int, int]
    scale: tuple[float, ...]
    skip_relax: bool
    pert_numb: int
    pert_box: float
    pert_atom: float
    md_nstep: int
    coll_ndata: int
    fp_style: str
    fp_settings: Any
    options: dict[str, Any]  # relax/MD options handed to the engine
    seed: int

    def out_dir_name(self) -> str:
        a, b, c = self.super_cell
        stem = self.poscar.name if self.poscar else f"{''.join(self.elements).lower()}.{self.cell_type}"
        return f"{stem}.{a:02d}x{b:02d}x{c:02d}"

    def effective(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["poscar"] = str(self.poscar) if self.poscar else None
        out["fp_settings"] = self.fp_settings.as_json()
        return out


def init_fp_style(raw: dict[str, Any], not_yet: dict[str, str] = INIT_NOT_YET) -> str:
    """DP-GEN's ``init_fp_style``: any case, VASP when absent; the engines in ``not_yet`` refused
    saying why."""
    style = raw.get("init_fp_style", DEFAULT_INIT_FP_STYLE)
    if not isinstance(style, str):
        raise UserError(f"got {style!r}", "init_fp_style", "one of " + ", ".join(labeler_names()))
    style = style.lower()
    if style in not_yet:
        raise UserError(not_yet[style], "init_fp_style", "one of " + ", ".join(
            n for n in labeler_names() if n not in not_yet))
    return style


def parse_init_params(raw: dict[str, Any], base_dir: Path) -> InitBulkParams:
    style = init_fp_style(raw)
    fp_settings, rest, foreign = split_labeler_keys(raw, style, "init_fp_style")
    p = parse_section(rest, _FIELDS, "", UNSUPPORTED, foreign)
    if p["type_map"] is not None and list(p["type_map"]) != list(p["elements"]):
        raise UserError(f"type_map {p['type_map']} differs from elements {p['elements']}", "type_map",
                        "the same list as elements (the data's type map), or leave it out")
    if len(p["super_cell"]) != 3:
        raise UserError(f"{len(p['super_cell'])} values", "super_cell", "three integers")
    poscar = None
    if p["from_poscar"]:
        if not p["from_poscar_path"]:
            raise UserError("from_poscar is true but from_poscar_path is missing", "from_poscar_path",
                            "a POSCAR file")
        poscar = Path(p["from_poscar_path"]).expanduser()
        if not poscar.is_absolute():
            poscar = Path(os.path.normpath(base_dir / poscar))  # the work dir may not exist yet
        if not poscar.is_file():
            raise UserError(f"{poscar} not found", "from_poscar_path", "a POSCAR file")
        names = read_poscar(poscar, "from_poscar_path", list(p["elements"]))["atom_names"]
        extra = sorted(set(names) - set(p["elements"]))
        if extra:
            raise UserError(f"{poscar} holds {extra}, not in elements {list(p['elements'])}", "elements",
                            "every element of the POSCAR")
    elif p["cell_type"] is None or p["latt"] is None:
        raise UserError("no structure given", "cell_type",
                        "cell_type (" + ", ".join(CELLS) + ") with latt, or from_poscar + from_poscar_path")
    options = {k: p[k] for k in ("relax_fmax", "relax_steps", "relax_cell", "md_nstep", "md_temp", "md_dt")}
    engine = labeler_class(style)(fp_settings, tuple(p["elements"]))
    can = engine.jobs(options)
    for stage in p["stages"]:
        kind = STAGE_JOB.get(stage)
        if kind and kind not in can:
            raise UserError(f"init_fp_style '{style}' cannot run stage {stage} ({STAGE_NAMES[stage]})",
                            "stages", "the engine's inputs for it (see docs/init_bulk.md), or leave "
                            f"stage {stage} out")
    return InitBulkParams(
        stages=tuple(sorted(set(p["stages"]))), elements=tuple(p["elements"]), poscar=poscar,
        cell_type=None if poscar else p["cell_type"], latt=None if poscar else p["latt"],
        super_cell=tuple(p["super_cell"]), scale=tuple(p["scale"]), skip_relax=p["skip_relax"],
        pert_numb=p["pert_numb"], pert_box=p["pert_box"], pert_atom=p["pert_atom"],
        md_nstep=p["md_nstep"], coll_ndata=p["coll_ndata"], fp_style=style, fp_settings=fp_settings,
        options=options, seed=p["seed"],
    )


def load_init_params(path: Path, workdir: Path) -> InitBulkParams:
    return load_config(path, lambda raw: parse_init_params(raw, workdir))


def key_statuses() -> dict[str, str]:
    """{init_bulk key: what happens to it here}, the engines' init keys included."""
    out = fields_key_statuses(_FIELDS, UNSUPPORTED)
    for style, keys in labeler_key_names().items():
        for key in keys:
            out.setdefault(key, f"supported with init_fp_style {style}")
    return out
