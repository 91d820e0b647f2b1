"""DP-GEN's ``simplify.json`` vocabulary for ``dpgen simplify``, read strictly into typed settings.

Keys follow DP-GEN's ``dpgen/simplify/arginfo.py`` (and the generator keys it reuses). A key DP-GEN
has that is not implemented here is refused in one line naming it; a key DP-GEN accepts but never
uses in simplify (``sys_configs``, ``fp_task_max``, ...) is accepted and reported at start.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpgen_ng.config.explore import EXPLORE_FIELDS
from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_str,
    batch_size,
    in_range,
    list_of,
    one_of,
    parse_section,
    positive,
    str_or_list_of_str,
    type_name,
)
from dpgen_ng.config.fields import (
    key_statuses as fields_key_statuses,
)
from dpgen_ng.config.param import check_training_input
from dpgen_ng.config.run_keys import drop_off_switches
from dpgen_ng.data import expand_systems
from dpgen_ng.errors import UserError
from dpgen_ng.fp import labeler_class, labeler_keys, labeler_names, split_labeler_keys
from dpgen_ng.io import load_config
from dpgen_ng.train.deepmd import BACKENDS, Backend, apply_activation
from dpgen_ng.train.warmstart import WarmStart, check_combination, check_files

NO_FP = "none"  # DP-GEN's fp_style when the data is labeled
BIG = 1e10  # DP-GEN's default for the energy and true-error trust levels: never reached

_LATER = "remove it; it comes in a later release of dpgen simplify"
UNSUPPORTED: dict[str, str] = {
    **{k: _LATER for k in (
        "training_reuse_iter", "training_reuse_old_ratio", "training_reuse_numb_steps",
        "training_reuse_stop_batch", "training_reuse_start_lr", "training_reuse_start_pref_e",
        "training_reuse_start_pref_f", "training_init_frozen_model", "training_finetune_model",
        "srtab_file_path", "one_h5", "dp_train_skip_neighbor_stat", "use_ele_temp")},
    **{k: "remove it; cluster data is not supported yet"
       for k in ("use_clusters", "cluster_cutoff", "cluster_cutoff_hard", "cluster_minify")},
    "cvasp": "custodian-wrapped VASP (cvasp: true) is not supported yet; set it false or remove it",
    "shuffle_poscar": "remove it; shuffling atoms does not apply to simplify",
}
# DP-GEN switches whose "off" value asks for nothing we lack: accepted
OFF_VALUES: dict[str, Any] = {"one_h5": False, "dp_train_skip_neighbor_stat": False, "use_ele_temp": 0,
                              "use_clusters": False, "shuffle_poscar": False, "cluster_minify": False,
                              "cvasp": False}
# DP-GEN accepts these in a simplify param but simplify never reads them (nor do we)
NO_EFFECT = ("sys_configs", "sys_configs_prefix", "sys_format", "fp_task_max", "fp_task_min",
             "fp_accurate_threshold", "fp_accurate_soft_threshold", "fp_skip_bad_box")
DPGEN_ONLY_FP = ("pwmat", "custom", "amber/diff")


def _mass_map(value: Any, where: str) -> list[float] | str:
    if value == "auto":
        return "auto"
    return list_of(positive(as_float), min_len=1)(value, where)


def _batch_list(value: Any, where: str) -> list[int | str] | str:
    if isinstance(value, str):
        return batch_size(value, where)
    return list_of(batch_size, min_len=1)(value, where)


def _training_param(value: Any, where: str) -> dict[str, Any]:
    d = as_dict(value, where)
    for k in ("model", "training"):
        if not isinstance(d.get(k), dict):
            raise UserError(f"missing '{k}' section", where, "a DeePMD-kit input with 'model' and 'training'")
    return copy.deepcopy(d)


def _pick_data(value: Any, where: str) -> list[str]:
    paths = str_or_list_of_str(value, where)
    if not paths:
        raise UserError("an empty list", where, "a deepmd/npy system dir, a dir of them, or a list")
    for i, p in enumerate(paths):
        if "#" in p or p.endswith((".h5", ".hdf5")):
            raise UserError("deepmd/hdf5 pick_data is not supported yet", f"{where}[{i}]",
                            "deepmd/npy system dirs (dpdata can convert: System(...).to('deepmd/npy', dir))")
    return paths


def _anything(value: Any, where: str) -> Any:
    return value


def _trust_field(name: str) -> Field:
    """A trust level; the force deviation's are required (as in DP-GEN), the others default to off."""
    if name.startswith("model_devi_f_"):
        return Field(positive(as_float, strict=False), doc=f"force deviation level {name[-2:]} (eV/Å)")
    return Field(positive(as_float, strict=False), default=BIG)


_TRUST = {n: _trust_field(n) for n in (f"{pre}_{q}_trust_{end}" for pre in ("model_devi", "true_error")
                                       for q in ("f", "e") for end in ("lo", "hi"))}

_FIELDS: dict[str, Field] = {
    "type_map": Field(list_of(type_name, min_len=1), doc="element names, e.g. [\"H\", \"C\"]"),
    "mass_map": Field(_mass_map, default="auto"),
    "pick_data": Field(_pick_data, doc="(list of) deepmd/npy system dirs, or dirs of them"),
    "labeled": Field(as_bool, default=False),
    "init_pick_number": Field(positive(as_int), doc="frames picked at random in iteration 0"),
    "iter_pick_number": Field(positive(as_int), doc="frames picked per iteration"),
    **_TRUST,
    "init_data_prefix": Field(as_str, default=""),
    "init_data_sys": Field(list_of(as_str), default=list),
    "init_batch_size": Field(_batch_list, default="auto"),
    "sys_batch_size": Field(_batch_list, default="auto"),
    "numb_models": Field(in_range(as_int, 2, 64), doc="models in the committee (4 is usual)"),
    "default_training_param": Field(_training_param, doc="a DeePMD-kit input.json"),
    "train_backend": Field(one_of(*BACKENDS), default="tensorflow"),
    "mlp_engine": Field(one_of("dp"), default="dp"),
    "model_devi_activation_func": EXPLORE_FIELDS["model_devi_activation_func"],
    "training_init_model": Field(as_bool, default=False),
    "training_iter0_model_path": Field(str_or_list_of_str, default=list),
    "dp_compress": Field(as_bool, default=False),
    "training_resume": Field(one_of("checkpoint", "from_scratch"), default="checkpoint"),
    "fp_style": Field(as_str, default=NO_FP),
    "ratio_failed": Field(in_range(as_float, 0.0, 1.0), default=0.05),
    "stop_iter": Field(positive(as_int), default=None,
                       doc="the iteration that trains the last committee; the run stops before its "
                           "model deviation"),
    "seed": Field(positive(as_int, strict=False), default=1),
    **{k: Field(_anything, default=None) for k in NO_EFFECT},
}


@dataclass(frozen=True)
class Trust:
    """A pair of trust levels; a value ≥ hi fails, lo ≤ value < hi is a candidate."""

    lo: float
    hi: float

    @property
    def active(self) -> bool:
        return self.lo < BIG or self.hi < BIG


@dataclass(frozen=True)
class SimplifyParams:
    type_map: tuple[str, ...]
    mass_map: tuple[float, ...]
    pick_data: tuple[str, ...]
    labeled: bool
    init_pick_number: int
    iter_pick_number: int
    f_trust: Trust
    e_trust: Trust
    true_f_trust: Trust
    true_e_trust: Trust
    numb_models: int
    default_training_param: dict[str, Any]
    fp_style: str
    fp_settings: Any
    init_data_prefix: str = ""
    init_data_sys: tuple[str, ...] = ()
    init_batch_size: Any = "auto"
    sys_batch_size: Any = "auto"
    train_backend: str = "tensorflow"
    warm_start: WarmStart = field(default_factory=WarmStart)
    activation: tuple[tuple[str, str], ...] | None = None  # per model: descriptor, fitting net
    dp_compress: bool = False
    training_resume: str = "checkpoint"
    ratio_failed: float = 0.05
    stop_iter: int | None = None
    seed: int = 1
    no_effect: tuple[str, ...] = ()  # keys given that DP-GEN's simplify does not use either

    @property
    def backend(self) -> Backend:
        return BACKENDS[self.train_backend]

    @property
    def true_error(self) -> bool:
        """Whether the committee's real error on the labels is judged too (``--real_error``)."""
        return self.true_f_trust.active or self.true_e_trust.active

    def training_param(self) -> dict[str, Any]:
        return copy.deepcopy(self.default_training_param)

    def effective(self) -> dict[str, Any]:
        """The effective settings as plain JSON (for ``dpgen check``)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Trust):
                value = asdict(value)
            elif name in ("fp_settings", "warm_start"):
                value = value.as_json() if hasattr(value, "as_json") else None
            out[name] = value
        return out


def machine_stages(params: SimplifyParams) -> tuple[str, ...]:
    """The machine.json sections a simplify run needs (fp only to label unlabeled data)."""
    return ("train", "model_devi") if params.labeled else ("train", "model_devi", "fp")


def _fp(raw: dict[str, Any]) -> tuple[str, Any, dict[str, Any], dict[str, str]]:
    """fp_style, its settings, the rest of the keys, and the keys of other labelers."""
    style = raw.get("fp_style", NO_FP)
    if style in DPGEN_ONLY_FP:
        raise UserError(f"fp_style '{style}' is not supported yet", "fp_style",
                        "one of " + ", ".join([NO_FP, *labeler_names()]))
    if not isinstance(style, str):
        raise UserError(f"got {type(style).__name__}", "fp_style", "a string")
    if style == NO_FP:
        foreign = {k: f"it belongs to fp_style '{s}', and fp_style is '{NO_FP}'"
                   for s, keys in labeler_keys().items() for k in keys}
        return style, None, raw, foreign
    settings, rest, foreign = split_labeler_keys(raw, style, "fp_style")
    return style, settings, rest, foreign


def _check_trust(p: dict[str, Any], labeled: bool) -> None:
    for pre in ("model_devi", "true_error"):
        for q in ("f", "e"):
            lo, hi = p[f"{pre}_{q}_trust_lo"], p[f"{pre}_{q}_trust_hi"]
            if lo > hi or (lo == hi and lo < BIG):
                raise UserError(f"trust_lo {lo:g} is not below trust_hi {hi:g}", f"{pre}_{q}_trust_lo",
                                f"a value below {pre}_{q}_trust_hi (set both)")
    if not labeled and any(p[f"true_error_{q}_trust_{e}"] < BIG for q in "fe" for e in ("lo", "hi")):
        raise UserError("the true error needs the labels of the data", "true_error_f_trust_lo",
                        "labeled: true, or remove the true_error_* keys")


def _check_training(p: dict[str, Any]) -> WarmStart:
    tparam = p["default_training_param"]
    backend = BACKENDS[p["train_backend"]]
    check_training_input(tparam, "default_training_param", backend)
    act = p["model_devi_activation_func"]
    if act is not None and len(act) != p["numb_models"]:
        raise UserError(f"{len(act)} entries for {p['numb_models']} models", "model_devi_activation_func",
                        "one per model (numb_models)")
    for pair in sorted(set(act or ())):  # each variant the models train
        variant = copy.deepcopy(tparam)
        apply_activation(variant, pair)
        check_training_input(variant, f"model_devi_activation_func ({'/'.join(pair)}) in "
                             "default_training_param", backend)
    tmap = tparam["model"].get("type_map")
    if tmap is not None and list(tmap) != list(p["type_map"]):
        raise UserError(f"type_map {tmap} differs from the top-level type_map {p['type_map']}",
                        "default_training_param.model.type_map", "the same list, or leave it out")
    if p["training_iter0_model_path"] and not p["training_init_model"]:
        raise UserError("training_iter0_model_path has no effect without training_init_model",
                        "training_iter0_model_path", "set training_init_model: true, or remove it")
    warm = WarmStart(init_model=p["training_init_model"],
                     iter0_model_path=tuple(p["training_iter0_model_path"]))
    check_combination(warm, p["numb_models"], backend, tparam["model"].get("descriptor", {}),
                      p["dp_compress"])
    return warm


def _check_types(p: dict[str, Any]) -> tuple[float, ...]:
    ntypes = len(p["type_map"])
    if len(set(p["type_map"])) != ntypes:
        raise UserError("repeated element", "type_map", "unique element names")
    masses = p["mass_map"]
    if masses == "auto":
        from ase.data import atomic_masses, atomic_numbers

        unknown = [el for el in p["type_map"] if el not in atomic_numbers]
        if unknown:
            raise UserError(f"no element named {unknown[0]!r} for mass_map 'auto'", "type_map",
                            "chemical symbols, or give mass_map explicitly")
        masses = [float(atomic_masses[atomic_numbers[el]]) for el in p["type_map"]]
    if len(masses) != ntypes:
        raise UserError(f"{len(masses)} masses for {ntypes} types", "mass_map", "one mass per type_map entry")
    return tuple(masses)


def resolve(workdir: Path, path: str, prefix: str = "") -> Path:
    """A path from the param: absolute, or relative to the work dir (as DP-GEN, run from it)."""
    p = Path(os.path.join(prefix, path) if prefix else path).expanduser()
    return p if p.is_absolute() else Path(workdir) / p


def _check_labels(system: Path, where: str) -> None:
    """``labeled: true`` needs energies and forces in every set of the system."""
    for set_dir in sorted(system.glob("set.*")):
        for name in ("energy.npy", "force.npy"):
            if not (set_dir / name).is_file():
                raise UserError(f"labeled is true but {set_dir} has no {name}", where,
                                "labeled: false with an fp_style to label the picks, or labeled data")


def _check_paths(p: dict[str, Any], workdir: Path) -> None:
    for i, entry in enumerate(p["pick_data"]):
        where = f"pick_data[{i}]" if len(p["pick_data"]) > 1 else "pick_data"
        found = expand_systems(resolve(workdir, entry))
        if not found:
            raise UserError(f"no deepmd/npy data (no type.raw) under {resolve(workdir, entry)}", where,
                            "a deepmd/npy system dir or a dir of them")
        for system in found if p["labeled"] else ():
            _check_labels(system, where)
    for i, entry in enumerate(p["init_data_sys"]):
        if not expand_systems(resolve(workdir, entry, p["init_data_prefix"])):
            raise UserError(f"no deepmd/npy data (no type.raw) under "
                            f"{resolve(workdir, entry, p['init_data_prefix'])}", f"init_data_sys[{i}]",
                            "a directory made by init_bulk or dpdata")
    if isinstance(p["init_batch_size"], list) and len(p["init_batch_size"]) < len(p["init_data_sys"]):
        raise UserError(f"{len(p['init_batch_size'])} values for {len(p['init_data_sys'])} systems",
                        "init_batch_size", "one batch size per init_data_sys entry, or a single 'auto'")


def parse_simplify_params(raw: dict[str, Any], workdir: Path) -> SimplifyParams:
    """Validate a simplify param mapping (paths relative to ``workdir``); :class:`UserError` on the
    first problem."""
    style, fp_settings, rest, foreign = _fp(raw)
    rest = drop_off_switches(rest, OFF_VALUES)
    p = parse_section(rest, _FIELDS, "", UNSUPPORTED, foreign)
    masses = _check_types(p)
    if not p["labeled"] and style == NO_FP:
        raise UserError("labeled is false but no fp_style labels the picked frames", "fp_style",
                        "one of " + ", ".join(labeler_names()) + ", or labeled: true")
    if not p["labeled"]:  # the labeler's own checks run when it is made (e.g. EMT's elements)
        labeler_class(style)(fp_settings, tuple(p["type_map"]))
    _check_trust(p, p["labeled"])
    warm = _check_training(p)
    _check_paths(p, workdir)
    check_files(workdir, warm, p["numb_models"], BACKENDS[p["train_backend"]])
    return SimplifyParams(
        type_map=tuple(p["type_map"]), mass_map=masses, pick_data=tuple(p["pick_data"]),
        labeled=p["labeled"], init_pick_number=p["init_pick_number"],
        iter_pick_number=p["iter_pick_number"],
        f_trust=Trust(p["model_devi_f_trust_lo"], p["model_devi_f_trust_hi"]),
        e_trust=Trust(p["model_devi_e_trust_lo"], p["model_devi_e_trust_hi"]),
        true_f_trust=Trust(p["true_error_f_trust_lo"], p["true_error_f_trust_hi"]),
        true_e_trust=Trust(p["true_error_e_trust_lo"], p["true_error_e_trust_hi"]),
        numb_models=p["numb_models"], default_training_param=p["default_training_param"],
        fp_style=style, fp_settings=fp_settings, init_data_prefix=p["init_data_prefix"],
        init_data_sys=tuple(p["init_data_sys"]), init_batch_size=p["init_batch_size"],
        sys_batch_size=p["sys_batch_size"], train_backend=p["train_backend"], warm_start=warm,
        activation=p["model_devi_activation_func"],
        dp_compress=p["dp_compress"], training_resume=p["training_resume"],
        ratio_failed=p["ratio_failed"], stop_iter=p["stop_iter"], seed=p["seed"],
        no_effect=tuple(k for k in NO_EFFECT if k in raw),
    )


def load_simplify_params(path: Path, workdir: Path) -> SimplifyParams:
    """Read and validate a simplify param file; relative paths in it are taken from ``workdir``."""
    return load_config(path, lambda raw: parse_simplify_params(raw, workdir))


def key_statuses() -> dict[str, str]:
    """{simplify key: what happens to it here}."""
    out = fields_key_statuses(_FIELDS, UNSUPPORTED)
    out.update({k: "accepted; DP-GEN's simplify does not use it either" for k in NO_EFFECT})
    out.update({k: f"accepted as {json.dumps(v)} (nothing to do); otherwise refused: {UNSUPPORTED[k]}"
                for k, v in OFF_VALUES.items() if k in UNSUPPORTED})
    for style, keys in labeler_keys().items():
        for key in keys:
            out.setdefault(key, f"supported with fp_style {style} (labeled: false)")
    return out
