"""DP-GEN's init_surf param vocabulary (``dpgen init_surf``): stages 1 (slabs, relaxation) and 2
(scale, elongate along z, perturb)."""

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
from dpgen_ng.config.init import DEFAULT_INIT_FP_STYLE, init_fp_style
from dpgen_ng.errors import UserError
from dpgen_ng.fp import labeler_class, split_labeler_keys
from dpgen_ng.initsurf.slab import UNIT_CELLS, poscar_atoms, slab_for, surf_name, unit_cell
from dpgen_ng.initsurf.vacuum import elongations
from dpgen_ng.io import load_config
from dpgen_ng.structures import read_poscar

STAGE_NAMES = {1: "slabs (+ relaxation)", 2: "scale/elongate/perturb"}
NO_AIMD = ("init_surf runs no AIMD (stages 1 and 2 only, as in DP-GEN): the structures are "
           "sys_configs of `dpgen run`")
UNSUPPORTED = {k: NO_AIMD for k in ("md_nstep", "md_temp", "md_dt", "md_incar", "md_kpt")}
NOT_YET = {"abacus": "init_surf with ABACUS is not supported (DP-GEN's init_surf runs VASP only)"}


def _stage(value: Any, where: str) -> int:
    stage = as_int(value, where)
    if stage not in STAGE_NAMES:
        raise UserError(f"got {stage!r}", where, "1 (slabs + relaxation) or 2 (scale/elongate/perturb); "
                        "init_surf has no stage 3 or 4 (no AIMD, as in DP-GEN)")
    return stage


def _miller(value: Any, where: str) -> tuple[int, int, int]:
    m = list_of(as_int)(value, where)
    if len(m) != 3 or not any(m):
        raise UserError(f"got {value!r}", where, "three integers, not all zero, e.g. [1, 1, 1]")
    return (m[0], m[1], m[2])


_FIELDS = {
    "stages": Field(list_of(_stage, min_len=1), doc="stages to run: [1, 2]"),
    "elements": Field(list_of(element, min_len=1), doc="element names (the type map)"),
    "cell_type": Field(one_of(*UNIT_CELLS), default=None),
    "latt": Field(positive(as_float), default=None),
    "from_poscar": Field(as_bool, default=False),
    "from_poscar_path": Field(as_str, default=None),
    "super_cell": Field(list_of(positive(as_int), min_len=3), default=lambda: [1, 1, 1]),
    "millers": Field(list_of(_miller, min_len=1), doc="Miller indices of the surfaces, e.g. [[1, 1, 1]]"),
    "layer_numb": Field(positive(as_int), default=None),
    "z_min": Field(positive(as_float), default=None),
    "vacuum_min": Field(positive(as_float), default=None),
    "vacuum_max": Field(positive(as_float), doc="the largest elongation along z (Å)"),
    "vacuum_resol": Field(list_of(positive(as_float)), default=None),
    "vacuum_numb": Field(positive(as_int), default=None),
    "mid_point": Field(positive(as_float), default=None),
    "head_ratio": Field(in_range(as_float, 0.0, 1.0), default=None),
    "scale": Field(list_of(positive(as_float), min_len=1), default=lambda: [1.0]),
    "skip_relax": Field(as_bool, default=False),
    "pert_numb": Field(positive(as_int, strict=False), default=0),
    "pert_box": Field(positive(as_float, strict=False), default=0.0),
    "pert_atom": Field(positive(as_float, strict=False), default=0.0),
    "coll_ndata": Field(positive(as_int), default=10**7, doc="accepted; unused (as in DP-GEN)"),
    "init_fp_style": Field(as_str, default=DEFAULT_INIT_FP_STYLE),
    "relax_fmax": Field(positive(as_float), default=0.05, doc="eV/Å"),
    "relax_steps": Field(positive(as_int), default=200),
    "relax_cell": Field(as_bool, default=False),
    "seed": Field(positive(as_int, strict=False), default=1),
}


@dataclass(frozen=True)
class InitSurfParams:
    stages: tuple[int, ...]
    elements: tuple[str, ...]
    poscar: Path | None
    cell_type: str | None
    latt: float | None
    super_cell: tuple[int, int, int]
    millers: tuple[tuple[int, int, int], ...]
    layer_numb: int | None
    z_min: float | None
    vacuum_min: float
    vacuum_max: float
    elongs: tuple[float, ...]  # from vacuum_max/vacuum_resol/mid_point/vacuum_numb/head_ratio
    scale: tuple[float, ...]
    skip_relax: bool
    pert_numb: int
    pert_box: float
    pert_atom: float
    fp_style: str
    fp_settings: Any  # None when nothing is relaxed and no engine key is given
    options: dict[str, Any]  # relaxation options handed to the engine
    seed: int
    ignored: tuple[str, ...]  # notes on keys given but not used (logged by init_surf)

    def out_dir_name(self) -> str:
        """DP-GEN's: ``surf.<elements>.<cell_type>.AAxBBxCC`` or ``<POSCAR name>.AAxBBxCC``."""
        cells = "x".join(f"{n:02d}" for n in self.super_cell)
        if self.poscar is not None:
            return f"{self.poscar.name}.{cells}"
        return f"surf.{''.join(self.elements).lower()}.{self.cell_type}.{cells}"

    def effective(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["poscar"] = str(self.poscar) if self.poscar else None
        out["fp_settings"] = None if self.fp_settings is None else self.fp_settings.as_json()
        out["surfaces"] = [surf_name(m) for m in self.millers]
        return out


def surf_fp_style(raw: dict[str, Any]) -> str:
    """``init_fp_style``, any case, VASP when absent (DP-GEN's init_surf always runs VASP)."""
    return init_fp_style(raw, NOT_YET)


def _thickness(p: dict[str, Any]) -> None:
    if p["layer_numb"] is not None and p["z_min"] is not None:
        raise UserError("both layer_numb and z_min are given", "z_min",
                        "one of layer_numb (layers) or z_min (Å); DP-GEN would silently ignore z_min")
    if p["layer_numb"] is None and p["z_min"] is None:
        raise UserError("neither layer_numb nor z_min is given", "layer_numb",
                        "layer_numb (number of layers) or z_min (Å, the slab cell height)")


def _vacuum(p: dict[str, Any]) -> tuple[list[float], list[str]]:
    """The elongations, and notes on vacuum keys given but unused."""
    resol, ignored = p["vacuum_resol"] or None, []
    if resol is not None:
        if len(resol) > 2:
            raise UserError(f"{len(resol)} values", "vacuum_resol", "one or two values (Å)")
        ignored = [k for k in ("vacuum_numb", "head_ratio") if p[k] is not None]
        if len(resol) == 1 and p["mid_point"] is not None:
            ignored.append("mid_point")
        if len(resol) == 2 and p["mid_point"] is None:
            raise UserError("two vacuum_resol values without mid_point", "mid_point",
                            "the elongation (Å) where the step changes from vacuum_resol[0] to [1]")
    else:
        for key in ("vacuum_numb", "head_ratio", "mid_point"):
            if p[key] is None:
                given = [k for k in ("vacuum_numb", "head_ratio", "mid_point") if p[k] is not None]
                what = f"{' and '.join(given)} without {key}" if given else "no vacuum_resol"
                raise UserError(what, key if given else "vacuum_resol",
                                "vacuum_resol (one or two steps, Å), or vacuum_numb + head_ratio + mid_point")
    if p["mid_point"] is not None and "mid_point" not in ignored and p["mid_point"] > p["vacuum_max"]:
        raise UserError(f"mid_point {p['mid_point']} > vacuum_max {p['vacuum_max']}", "mid_point",
                        "a value up to vacuum_max")
    elongs = elongations(p["vacuum_max"], tuple(resol) if resol else None, p["mid_point"],
                         p["vacuum_numb"], p["head_ratio"])
    if not elongs:
        raise UserError(f"no elongation below vacuum_max {p['vacuum_max']}", "vacuum_resol",
                        "steps smaller than vacuum_max")
    return elongs, [f"'{k}' is ignored: vacuum_resol is given (as in DP-GEN)" for k in ignored]


def _poscar(p: dict[str, Any], base_dir: Path) -> Path:
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
    return poscar


def default_vacuum_min(elements: list[str]) -> float:
    """DP-GEN's default: the largest atomic radius (pymatgen) of the elements."""
    from pymatgen.core import Element

    radii = [Element(e).atomic_radius for e in elements]
    if any(r is None for r in radii):
        raise UserError(f"no atomic radius known for {[e for e, r in zip(elements, radii) if r is None]}",
                        "vacuum_min", "a vacuum (Å) on each side of the slab")
    return max(float(r) for r in radii)


def _engine_keys(raw: dict[str, Any], style: str) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """The engine's settings, the other keys, and keys of other engines. Without a relaxation to
    run (no stage 1, or skip_relax) and none of the engine's keys, there are no settings (None):
    preparing structures needs no VASP input."""
    stages, skip = raw.get("stages"), raw.get("skip_relax")
    relax = not (skip is True or (isinstance(stages, list) and 1 not in stages))
    cls = labeler_class(style)
    own = set(cls.KEYS) | {alias for f in cls.KEYS.values() for alias in f.aliases}
    if not relax and not own & set(raw):
        return None, dict(raw), {}
    return split_labeler_keys(raw, style, "init_fp_style")


def _check_engine(p: dict[str, Any], style: str, fp_settings: Any, options: dict[str, Any]) -> None:
    if 1 not in p["stages"] or p["skip_relax"]:
        return
    engine = labeler_class(style)(fp_settings, tuple(p["elements"]))
    if "relax" not in engine.jobs(options):
        raise UserError(f"init_fp_style '{style}' cannot relax (stage 1)", "stages",
                        "the engine's relaxation inputs (see docs/init_surf.md), or skip_relax: true")


def _check_slabs(params: InitSurfParams) -> None:
    """Every surface can be built (z_min reachable within MAX_LAYERS layers)."""
    if params.poscar is not None:
        unit = poscar_atoms(params.poscar, params.elements)
    else:
        unit = unit_cell(params.cell_type, params.latt)
    for i, miller in enumerate(params.millers):
        try:
            slab_for(unit, miller, params.vacuum_min, params.layer_numb, params.z_min)
        except (ValueError, ArithmeticError) as exc:
            raise UserError(str(exc), f"millers[{i}]" if params.layer_numb else "z_min",
                            "a surface ASE can cut with that thickness") from None


def parse_initsurf_params(raw: dict[str, Any], base_dir: Path) -> InitSurfParams:
    style = surf_fp_style(raw)
    for key in UNSUPPORTED:
        if key in raw:
            raise UserError(f"key '{key}' does not apply to init_surf", key, UNSUPPORTED[key])
    fp_settings, rest, foreign = _engine_keys(raw, style)
    p = parse_section(rest, _FIELDS, "", None, foreign)
    if len(p["super_cell"]) != 3:
        raise UserError(f"{len(p['super_cell'])} values", "super_cell", "three integers")
    poscar = _poscar(p, base_dir) if p["from_poscar"] else None
    if poscar is None and (p["cell_type"] is None or p["latt"] is None):
        raise UserError("no structure given", "cell_type" if p["cell_type"] is None else "latt",
                        "cell_type (" + ", ".join(UNIT_CELLS) + ") with latt, or from_poscar + "
                        "from_poscar_path")
    _thickness(p)
    elongs, ignored = _vacuum(p)
    if p["super_cell"][2] != 1:
        ignored.append(f"super_cell[2] = {p['super_cell'][2]} only names the directory: slabs repeat "
                       "in-plane only (as in DP-GEN); use layer_numb or z_min for the thickness")
    options = {k: p[k] for k in ("relax_fmax", "relax_steps", "relax_cell")}
    _check_engine(p, style, fp_settings, options)
    params = InitSurfParams(
        stages=tuple(sorted(set(p["stages"]))), elements=tuple(p["elements"]), poscar=poscar,
        cell_type=None if poscar else p["cell_type"], latt=None if poscar else p["latt"],
        super_cell=tuple(p["super_cell"]), millers=tuple(p["millers"]), layer_numb=p["layer_numb"],
        z_min=p["z_min"], vacuum_min=p["vacuum_min"] or default_vacuum_min(p["elements"]),
        vacuum_max=p["vacuum_max"], elongs=tuple(elongs), scale=tuple(p["scale"]),
        skip_relax=p["skip_relax"], pert_numb=p["pert_numb"], pert_box=p["pert_box"],
        pert_atom=p["pert_atom"], fp_style=style, fp_settings=fp_settings, options=options, seed=p["seed"],
        ignored=tuple(ignored),
    )
    _check_slabs(params)
    return params


def load_initsurf_params(path: Path, workdir: Path) -> InitSurfParams:
    return load_config(path, lambda raw: parse_initsurf_params(raw, workdir))
