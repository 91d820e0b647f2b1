"""DP-GEN autotest's param vocabulary for ``dpgen test`` (``structures``, ``interaction``,
``relaxation``, ``properties``), plus ``reference``: a second interaction to compare with."""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_str,
    join,
    list_of,
    one_of,
    parse_section,
    positive,
    str_or_list_of_str,
    type_name,
)
from dpgen_ng.errors import UserError
from dpgen_ng.fp import labeler_class, labeler_names, split_labeler_keys
from dpgen_ng.io import load_config
from dpgen_ng.structures import read_poscar

PROPERTY_TYPES = ("eos", "elastic", "vacancy", "interstitial", "surface")
# DP-GEN's default (relax_pos, relax_shape, relax_vol) per calculation
DEFAULT_DOFS = MappingProxyType({
    "relaxation": (True, True, True), "eos": (True, True, False), "elastic": (True, False, False),
    "vacancy": (True, True, True), "interstitial": (True, True, True), "surface": (True, True, False),
})

_CAL_FIELDS = {
    "relax_pos": Field(as_bool, default=None),
    "relax_shape": Field(as_bool, default=None),
    "relax_vol": Field(as_bool, default=None),
    "etol": Field(positive(as_float, strict=False), default=1e-12, doc="LAMMPS minimize: energy tolerance"),
    "ftol": Field(positive(as_float, strict=False), default=1e-6, doc="LAMMPS minimize: force tolerance"),
    "maxiter": Field(positive(as_int), default=5000, doc="most optimizer steps"),
    "maxeval": Field(positive(as_int), default=500000, doc="LAMMPS minimize: most force evaluations"),
    "fmax": Field(positive(as_float), default=1e-3, doc="eV/Å: force threshold of the other engines"),
}
_CAL_UNSUPPORTED = {
    "overwrite_interaction": "one interaction per side: give the other one as 'reference'",
    "input_prop": "user-written inputs are not supported yet",
    **{k: "VASP INCAR overrides are not supported yet: put them in the INCAR"
       for k in ("ediff", "ediffg", "encut", "kspacing", "kgamma")},
}
_PROP_COMMON = {
    "type": Field(as_str),
    "skip": Field(as_bool, default=False),
    "cal_type": Field(one_of("relaxation", "static"), default="relaxation"),
    "cal_setting": Field(as_dict, default=dict),
    "start_confs_path": Field(as_str, default=None),
}
_PROP_UNSUPPORTED = {k: "refine / reproduce runs are not supported yet" for k in (
    "init_from_suffix", "output_suffix", "reproduce", "init_data_path", "reprod_last_frame")}
_supercell = list_of(positive(as_int), min_len=3)
_PROP_FIELDS = MappingProxyType({
    "eos": {"vol_start": Field(positive(as_float)), "vol_end": Field(positive(as_float)),
            "vol_step": Field(positive(as_float)), "vol_abs": Field(as_bool, default=False)},
    "elastic": {"norm_deform": Field(positive(as_float), default=1e-2),
                "shear_deform": Field(positive(as_float), default=1e-2)},
    "vacancy": {"supercell": Field(_supercell, default=lambda: [1, 1, 1])},
    "interstitial": {"supercell": Field(_supercell, default=lambda: [1, 1, 1]),
                     "insert_ele": Field(list_of(as_str, min_len=1)),
                     "conf_filters": Field(as_dict, default=dict)},
    "surface": {"min_slab_size": Field(positive(as_float)), "min_vacuum_size": Field(positive(as_float)),
                "max_miller": Field(positive(as_int), default=2),
                "pert_xz": Field(positive(as_float, strict=False), default=0.01),
                "static-opt": Field(as_bool, default=False)},
})
_TOP_FIELDS = {
    "structures": Field(str_or_list_of_str, doc="globs of directories holding a POSCAR"),
    "interaction": Field(as_dict, doc="the model: {type: deepmd, model, type_map} or an fp engine"),
    "reference": Field(as_dict, default=None, doc="the interaction to compare with (same form)"),
    "relaxation": Field(as_dict, default=dict),
    "properties": Field(list_of(as_dict), default=list),
}


@dataclass(frozen=True)
class CalSetting:
    """How one calculation relaxes: what may move, and the optimizer's limits."""

    relax_pos: bool
    relax_shape: bool
    relax_vol: bool
    etol: float = 1e-12
    ftol: float = 1e-6
    maxiter: int = 5000
    maxeval: int = 500000
    fmax: float = 1e-3

    @property
    def dofs(self) -> tuple[bool, bool, bool]:
        return self.relax_pos, self.relax_shape, self.relax_vol

    @property
    def static(self) -> bool:
        return not any(self.dofs)

    def options(self) -> dict[str, Any]:
        """The engines' relaxation options (LAMMPS reads etol/ftol/maxiter/maxeval, the others
        relax_fmax/relax_steps)."""
        return {"relax_pos": self.relax_pos, "relax_shape": self.relax_shape, "relax_vol": self.relax_vol,
                "etol": self.etol, "ftol": self.ftol, "maxiter": self.maxiter, "maxeval": self.maxeval,
                "relax_fmax": self.fmax, "relax_steps": self.maxiter}


@dataclass(frozen=True)
class InteractionSettings:
    role: str  # "model" or "reference"
    type: str
    type_map: tuple[str, ...]
    model: Path | None = None  # deepmd
    fp_settings: Any = None  # fp engines
    machine: str | None = None  # the machine.json section, when not the default
    label: str = ""  # the model file as the param names it

    @property
    def stage(self) -> str:
        """The machine.json section its tasks run with (as DP-GEN: LAMMPS → model_devi, else fp)."""
        return self.machine or ("model_devi" if self.type == "deepmd" else "fp")

    def engine(self) -> Any:
        if self.type == "deepmd":
            from dpgen_ng.autotest.lammps import DeepmdLammps

            return DeepmdLammps(self.model, self.type_map)
        return labeler_class(self.type)(self.fp_settings, self.type_map)

    def describe(self) -> str:
        return f"deepmd ({self.label or self.model})" if self.type == "deepmd" else self.type

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "type_map": list(self.type_map)}
        if self.model is not None:
            out["model"] = str(self.model)
        if self.fp_settings is not None:
            out["settings"] = self.fp_settings.as_json()
        out["machine"] = self.stage
        return out


@dataclass(frozen=True)
class PropertySpec:
    type: str
    params: dict[str, Any]
    cal: CalSetting
    skip: bool = False
    start_confs_path: Path | None = None

    @property
    def dirname(self) -> str:
        return f"{self.type}_00"


@dataclass(frozen=True)
class TestParams:
    structures: tuple[Path, ...]
    interactions: tuple[InteractionSettings, ...]  # the model first, then the reference if any
    relaxation: CalSetting
    properties: tuple[PropertySpec, ...] = field(default=())

    def effective(self) -> dict[str, Any]:
        return {"structures": [str(p) for p in self.structures],
                "interactions": [i.as_json() for i in self.interactions],
                "relaxation": self.relaxation.__dict__,
                "properties": [{"type": p.type, **p.params, "cal_setting": p.cal.__dict__, "skip": p.skip,
                                "start_confs_path": str(p.start_confs_path) if p.start_confs_path else None}
                               for p in self.properties]}


def parse_cal(raw_type: str, cal_type: str, raw: dict[str, Any], where: str) -> CalSetting:
    p = parse_section(raw, _CAL_FIELDS, where, _CAL_UNSUPPORTED)
    defaults = (False, False, False) if cal_type == "static" else DEFAULT_DOFS[raw_type]
    dofs = [d if p[k] is None or cal_type == "static" else p[k]
            for k, d in zip(("relax_pos", "relax_shape", "relax_vol"), defaults)]
    return CalSetting(*dofs, etol=p["etol"], ftol=p["ftol"], maxiter=p["maxiter"], maxeval=p["maxeval"],
                      fmax=p["fmax"])


def find_structures(patterns: list[str], workdir: Path) -> tuple[Path, ...]:
    found: list[Path] = []
    for i, pattern in enumerate(patterns):
        full = pattern if Path(pattern).is_absolute() else str(workdir / pattern)
        dirs = sorted(Path(p).resolve() for p in glob.glob(full) if (Path(p) / "POSCAR").is_file())
        if not dirs:
            raise UserError(f"'{pattern}' matches no directory holding a POSCAR", f"structures[{i}]",
                            "globs of conf directories (relative to the work dir)")
        for d in dirs:
            if not d.is_relative_to(workdir):
                raise UserError(f"{d} is outside the work dir {workdir}", f"structures[{i}]",
                                "conf directories under the work dir")
            if d not in found:
                found.append(d)
    return tuple(found)


def conf_elements(structures: tuple[Path, ...]) -> list[str]:
    out: list[str] = []
    for d in structures:
        s = read_poscar(d / "POSCAR", "structures")
        out += [n for n, c in zip(s["atom_names"], s["atom_numbs"]) if c and n not in out]
    return out


def _type_map(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, dict):  # DP-GEN's {element: LAMMPS type index}
        idx = sorted(value.items(), key=lambda kv: kv[1])
        if [i for _, i in idx] != list(range(len(idx))):
            raise UserError(f"indices {sorted(value.values())}", where, "indices 0, 1, ... (one per element)")
        return tuple(k for k, _ in idx)
    return tuple(list_of(type_name, min_len=1)(value, where))


def _vasp_keys(raw: dict[str, Any], type_map: tuple[str, ...], where: str) -> dict[str, Any]:
    """DP-GEN autotest's VASP keys (incar, potcar_prefix, potcars) as our labeler's keys."""
    out = {k: v for k, v in raw.items() if k not in ("incar", "potcar_prefix", "potcars")}
    if "incar" in raw:
        out["fp_incar"] = raw["incar"]
    if "potcars" in raw:
        potcars = as_dict(raw["potcars"], join(where, "potcars"))
        missing = [el for el in type_map if el not in potcars]
        if missing:
            raise UserError(f"no POTCAR for {missing}", join(where, "potcars"), "{element: POTCAR file}")
        out["fp_pp_files"] = [potcars[el] for el in type_map]
        out["fp_pp_path"] = raw.get("potcar_prefix", "")
    return out


def parse_interaction(raw: dict[str, Any], role: str, where: str, default_map: tuple[str, ...],
                      workdir: Path) -> InteractionSettings:
    raw = {k: v for k, v in raw.items() if not k.startswith("_")}
    kind = raw.pop("type", None)
    names = ("deepmd", *labeler_names())
    if kind not in names:
        raise UserError(f"got {kind!r}", join(where, "type"), "one of " + ", ".join(names))
    type_map = _type_map(raw.pop("type_map"), join(where, "type_map")) if "type_map" in raw else default_map
    machine = as_str(raw.pop("machine"), join(where, "machine")) if "machine" in raw else None
    if kind == "deepmd":
        fields = {"model": Field(str_or_list_of_str), "deepmd_version": Field(as_str, default=None),
                  "in_lammps": Field(one_of("auto"), default="auto")}
        p = parse_section(raw, fields, where)
        if "type_map" not in p and not type_map:
            raise UserError("missing required key 'type_map'", where, "{element: LAMMPS type index}")
        if len(p["model"]) != 1:
            raise UserError(f"{len(p['model'])} models", join(where, "model"), "one model file")
        model = Path(p["model"][0]).expanduser()
        model = model if model.is_absolute() else workdir / model
        if not model.is_file():
            raise UserError(f"{model} not found", join(where, "model"), "a frozen DeePMD model (.pb or .pth)")
        return InteractionSettings(role, kind, type_map, model=model.resolve(), machine=machine,
                                   label=p["model"][0])
    if kind == "vasp":
        raw = _vasp_keys(raw, type_map, where)
    try:
        settings, rest, foreign = split_labeler_keys(raw, kind, "type")
        parse_section(rest, {}, where, foreign=foreign)
        labeler_class(kind)(settings, type_map)  # the engine checks its elements
    except UserError as exc:
        raise UserError(exc.what, join(where, exc.where) if exc.where else where, exc.expected) from None
    return InteractionSettings(role, kind, type_map, fp_settings=settings, machine=machine)


def parse_property(raw: dict[str, Any], where: str, workdir: Path) -> PropertySpec:
    kind = raw.get("type")
    if kind in ("gamma", "phonon"):
        raise UserError(f"property '{kind}' is not supported yet", join(where, "type"),
                        "one of " + ", ".join(PROPERTY_TYPES))
    if kind not in PROPERTY_TYPES:
        raise UserError(f"got {kind!r}", join(where, "type"), "one of " + ", ".join(PROPERTY_TYPES))
    unsupported = dict(_PROP_UNSUPPORTED)
    if kind == "interstitial":
        unsupported["bcc_self"] = "the hand-built bcc interstitials are not supported yet"
    p = parse_section(raw, {**_PROP_COMMON, **_PROP_FIELDS[kind]}, where, unsupported)
    if kind == "interstitial":
        filters = parse_section(p["conf_filters"], {"min_dist": Field(positive(as_float), default=None)},
                                join(where, "conf_filters"))
        p["conf_filters"] = filters
    cal_type = "static" if p.pop("static-opt", False) else p["cal_type"]
    cal = parse_cal(kind, cal_type, p["cal_setting"], join(where, "cal_setting"))
    start = None
    if p["start_confs_path"]:
        start = Path(p["start_confs_path"]).expanduser()
        start = start if start.is_absolute() else workdir / start
        if not start.is_dir():
            raise UserError(f"{start} is not a directory", join(where, "start_confs_path"),
                            "a directory holding <conf name>/relaxation/relax_task/CONTCAR")
    if kind == "eos" and p["vol_end"] <= p["vol_start"]:
        raise UserError(f"vol_end {p['vol_end']} ≤ vol_start {p['vol_start']}", join(where, "vol_end"),
                        "a volume range vol_start < vol_end")
    params = {k: v for k, v in p.items() if k not in _PROP_COMMON}
    return PropertySpec(kind, params, cal, p["skip"], start)


def check_engines(params: TestParams) -> None:
    """Every interaction can do every calculation asked for (a clear error now, not at run)."""
    cals = [("relaxation", params.relaxation)] + [(f"properties[{i}]", p.cal)
                                                   for i, p in enumerate(params.properties)]
    for inter in params.interactions:
        engine = inter.engine()
        for where, cal in cals:
            if cal.static:
                continue
            try:
                jobs = engine.jobs(cal.options())
            except UserError as exc:
                raise UserError(exc.what, f"{where}.cal_setting", exc.expected) from None
            if "relax" not in jobs:
                raise UserError(f"{inter.type} cannot run relaxations in dpgen test yet",
                                f"{where}.cal_setting", 'cal_type "static", or another reference')


def parse_test_params(raw: dict[str, Any], workdir: Path) -> TestParams:
    workdir = Path(workdir).resolve()
    p = parse_section(raw, _TOP_FIELDS, "")
    structures = find_structures(p["structures"], workdir)
    elements = conf_elements(structures)
    model = parse_interaction(p["interaction"], "model", "interaction", tuple(elements), workdir)
    interactions = [model]
    if p["reference"] is not None:
        interactions.append(parse_interaction(p["reference"], "reference", "reference", model.type_map,
                                              workdir))
    for inter in interactions:
        extra = [el for el in elements if el not in inter.type_map]
        if extra:
            raise UserError(f"the structures hold {extra}, not in type_map {list(inter.type_map)}",
                            "interaction" if inter.role == "model" else "reference", "every element mapped")
    if len(interactions) == 2 and interactions[0].stage == interactions[1].stage \
            and interactions[0].type != interactions[1].type:
        raise UserError(f"'{interactions[0].type}' and '{interactions[1].type}' would both run with the "
                        f"command of machine section '{interactions[0].stage}'", "reference.machine",
                        "the name of another machine.json section for the reference (e.g. \"fp_ref\")")
    relax_raw = parse_section(p["relaxation"], {"cal_type": Field(one_of("relaxation"), default="relaxation"),
                                                "cal_setting": Field(as_dict, default=dict)}, "relaxation")
    relaxation = parse_cal("relaxation", "relaxation", relax_raw["cal_setting"], "relaxation.cal_setting")
    props = tuple(parse_property(r, f"properties[{i}]", workdir) for i, r in enumerate(p["properties"]))
    seen = [q.dirname for q in props]
    dup = {d for d in seen if seen.count(d) > 1}
    if dup:
        raise UserError(f"two properties of type {sorted(dup)}", "properties", "one entry per type")
    params = TestParams(structures, tuple(interactions), relaxation, props)
    check_engines(params)
    return params


def load_test_params(path: Path, workdir: Path) -> TestParams:
    return load_config(path, lambda raw: parse_test_params(raw, workdir))


__all__ = ["CalSetting", "InteractionSettings", "PropertySpec", "TestParams", "load_test_params",
           "parse_test_params"]
