"""DP-GEN's ``param.json`` vocabulary for ``dpgen run``, read strictly into typed settings."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpgen_ng.config.explore import EXPLORE_FIELDS, ExploreOptions, explore_options
from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_str,
    batch_size,
    either,
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
from dpgen_ng.config.jobs import ExploreJob, TrustLevel, job_json, parse_job, parse_trust
from dpgen_ng.config.run_keys import DPGEN_FP_STYLES, OFF_VALUES, UNSUPPORTED, drop_off_switches
from dpgen_ng.converge.criteria import StopCriterion, parse_convergence
from dpgen_ng.errors import UserError
from dpgen_ng.explore.pick import PICKERS
from dpgen_ng.explore.select import AdaptiveTrust
from dpgen_ng.fp import labeler_class, labeler_key_names, labeler_names, split_labeler_keys
from dpgen_ng.io import load_config
from dpgen_ng.train.deepmd import BACKENDS, Backend, apply_activation
from dpgen_ng.train.warmstart import Reuse, WarmStart, check_combination, parse_old_ratio


def key_statuses() -> dict[str, str]:
    """{run-param key: what happens to it here}, labelers' keys included."""
    out = fields_key_statuses(_FIELDS, UNSUPPORTED)
    for key, off in OFF_VALUES.items():
        if key in UNSUPPORTED:
            out[key] = f"accepted as {json.dumps(off)} (nothing to do); otherwise refused: {UNSUPPORTED[key]}"
    styles: dict[str, list[str]] = {}
    for style, keys in labeler_key_names().items():
        for key in keys:
            styles.setdefault(key, []).append(style)
    out.update({key: "supported with fp_style " + ", ".join(names) for key, names in styles.items()})
    return out


def _backend(value: Any, where: str) -> str:
    if value in BACKENDS:
        return value
    if value in ("jax", "pytorch-exportable", "paddle"):
        raise UserError(f"train_backend '{value}' is not supported yet", where,
                        "one of " + ", ".join(map(repr, BACKENDS)))
    raise UserError(f"got {value!r}", where, "one of " + ", ".join(map(repr, BACKENDS)))


def _false_only(why: str):  # noqa: ANN202 - a parser
    """A DP-GEN switch whose default (false) is what we do; true is not supported yet."""

    def parse(value: Any, where: str) -> bool:
        if as_bool(value, where):
            raise UserError(f"'{where}: true' is not supported yet", where, why + "; set it to false")
        return False

    return parse


def _bad_box_criteria(value: Any, where: str) -> dict[str, float]:
    """DP-GEN's "length_ratio:5;height_ratio:5" (also wrap_ratio, tilt_ratio)."""
    from dpgen_ng.explore.filters import BOX_CRITERIA

    out: dict[str, float] = {}
    for part in as_str(value, where).split(";"):
        if not part.strip():
            continue
        key, _, num = part.partition(":")
        key = key.strip()
        if key not in BOX_CRITERIA:
            raise UserError(f"unknown criterion {key!r}", where, "criteria from " + ", ".join(BOX_CRITERIA))
        try:
            out[key] = float(num)
        except ValueError:
            raise UserError(f"{part!r}", where, "'name:number' separated by ';'") from None
    return out


def _min_distance(value: Any, type_map: list[str]) -> dict[tuple[int, int], float]:
    where = "fp_min_distance"
    n = len(type_map)
    if value is None:
        return {}
    if not isinstance(value, dict):
        return {(a, b): float(value) for a in range(n) for b in range(a, n)}
    out = {}
    for key, dist in value.items():
        names = str(key).split("-")
        if len(names) != 2 or any(x not in type_map for x in names):
            raise UserError(f"pair {key!r}", f"{where}.{key}", f"'A-B' with A, B from type_map {type_map}")
        a, b = sorted(type_map.index(x) for x in names)
        out[(a, b)] = positive(as_float)(dist, f"{where}.{key}")
    return out


def _adaptive(p: dict[str, Any]) -> AdaptiveTrust | None:
    """DP-GEN's adaptive trust_lo keys (model_devi_adapt_trust_lo and its candidate counts)."""
    keys = ("model_devi_numb_candi_f", "model_devi_perc_candi_f", "model_devi_numb_candi_v",
            "model_devi_perc_candi_v")
    if not p["model_devi_adapt_trust_lo"]:
        for key in keys:
            if p[key] is not None:
                raise UserError(f"'{key}' has no effect without model_devi_adapt_trust_lo", key,
                                "set model_devi_adapt_trust_lo: true, or remove it")
        return None
    d = {k: p[k] for k in keys if p[k] is not None}
    return AdaptiveTrust(numb_f=d.get(keys[0], 10), perc_f=d.get(keys[1], 0.0),
                         numb_v=d.get(keys[2], 0), perc_v=d.get(keys[3], 0.0))


def _mass_map(value: Any, where: str) -> list[float] | str:
    if value == "auto":
        return "auto"
    return list_of(positive(as_float), min_len=1)(value, where)


def _sys_configs(value: Any, where: str) -> list[list[str]]:
    return list_of(str_or_list_of_str, min_len=1)(value, where)


def _batch_list(value: Any, where: str) -> list[int | str] | str:
    if isinstance(value, str):
        return batch_size(value, where)
    return list_of(batch_size)(value, where)


def _training_param(value: Any, where: str) -> dict[str, Any]:
    d = as_dict(value, where)
    for k in ("model", "training"):
        if not isinstance(d.get(k), dict):
            raise UserError(f"missing '{k}' section", where, "a DeePMD-kit input with 'model' and 'training'")
    return copy.deepcopy(d)


def _supported_backends(kind: str, name: str) -> list[str] | None:
    """The backends in the "(Supported Backend: …)" label DeePMD-kit's argument registry gives a
    descriptor, fitting or loss type (None when it has none, i.e. all backends)."""
    from deepmd.utils import argcheck

    plugin = {"descriptor": argcheck.descrpt_args_plugin, "fitting_net": argcheck.fitting_args_plugin,
              "loss": argcheck.loss_args_plugin}[kind]
    for (key, alias, doc), _ in plugin._ArgsPlugin__plugin.plugins.items():  # noqa: SLF001
        if name == key or name in (alias or ()):
            head = doc.split(")", 1)[0]
            if not head.startswith("(Supported Backend:"):
                return None
            return [b.strip() for b in head[len("(Supported Backend:"):].split(",")]
    return None


def check_backend_support(d: dict[str, Any], backend: Backend, where: str) -> None:
    """Each descriptor / fitting / loss type of the input is one DeePMD-kit's schema documents for
    the chosen backend (DPA-2 and DPA-3, say, are PyTorch-only)."""
    model = d.get("model", {})
    parts: list[tuple[str, str, Any]] = []
    desc = model.get("descriptor", {})
    subs = desc.get("list", []) if desc.get("type") == "hybrid" else [desc]
    for i, sub in enumerate(subs):
        path = f"{where}.model.descriptor" + (f".list[{i}]" if desc.get("type") == "hybrid" else "")
        parts.append(("descriptor", path, sub.get("type", "se_e2_a") if isinstance(sub, dict) else None))
    fitting = model.get("fitting_net", {}).get("type", "ener")
    parts.append(("fitting_net", f"{where}.model.fitting_net", fitting))
    parts.append(("loss", f"{where}.loss", d.get("loss", {}).get("type", "ener")))
    for kind, path, name in parts:
        if not isinstance(name, str):
            continue
        label = _supported_backends(kind, name)
        if label is not None and backend.doc_name not in label:
            raise UserError(f"{kind} type '{name}' is not available in DeePMD-kit's {backend.doc_name} "
                            f"backend (supported: {', '.join(label)})", f"{path}.type",
                            "train_backend: pytorch" if "PyTorch" in label and backend.name != "pytorch"
                            else f"a {kind} type of the {backend.name} backend")


def check_training_input(d: dict[str, Any], where: str, backend: Backend | None = None) -> None:
    """Validate with DeePMD-kit's own (strict) schema, as ``dp train`` will, before any job runs,
    then the types it uses against ``backend``."""
    import warnings

    from deepmd.utils.argcheck import normalize

    trial = copy.deepcopy(d)
    trial["training"].setdefault("training_data", {})["systems"] = ["placeholder"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            normalize(trial)
    except Exception as exc:  # dargs raises its own types
        text = " ".join(str(exc).split())
        loc = ""
        if text.startswith("[at location `"):
            loc, _, text = text[len("[at location `"):].partition("`] ")
        text = text.replace("[at root location] ", "")
        raise UserError(text.rstrip(". "), f"{where}.{loc}" if loc else where,
                        "a valid DeePMD-kit 3.2 input (see `dp train --help` / its docs)") from None
    if backend is not None:  # after the schema: the sections are dicts now
        check_backend_support(d, backend, where)


_FIELDS: dict[str, Field] = {
    "type_map": Field(list_of(type_name, min_len=1), doc="element names, e.g. [\"H\", \"C\"]"),
    "mass_map": Field(_mass_map, default="auto"),
    "init_data_prefix": Field(as_str, default=""),
    "init_data_sys": Field(list_of(as_str, min_len=1), doc="list of deepmd/npy dirs with initial data"),
    "init_batch_size": Field(_batch_list, default="auto"),
    "sys_configs_prefix": Field(as_str, default=""),
    "sys_configs": Field(_sys_configs, doc="list of lists of globs of configurations"),
    "sys_batch_size": Field(_batch_list, default="auto"),
    "sys_format": Field(as_str, default="vasp/poscar"),
    "numb_models": Field(in_range(as_int, 2, 64), default=4),
    "default_training_param": Field(_training_param, doc="a DeePMD-kit input.json"),
    "train_backend": Field(_backend, default="tensorflow", doc="DeePMD-kit backend: tensorflow, pytorch"),
    "training_init_model": Field(as_bool, default=False),
    "training_iter0_model_path": Field(str_or_list_of_str, default=list),
    "training_init_frozen_model": Field(str_or_list_of_str, default=list),
    "training_finetune_model": Field(str_or_list_of_str, default=list),
    "training_reuse_iter": Field(positive(as_int, strict=False), default=None),
    "training_reuse_old_ratio": Field(parse_old_ratio, default=None),
    "training_reuse_numb_steps": Field(positive(as_int), default=None,
                                       aliases=("training_reuse_stop_batch",)),
    "training_reuse_start_lr": Field(positive(as_float), default=None),
    "training_reuse_start_pref_e": Field(positive(as_float, strict=False), default=None),
    "training_reuse_start_pref_f": Field(positive(as_float, strict=False), default=None),
    "training_reuse_decay_steps": Field(positive(as_int), default=None),
    "dp_compress": Field(as_bool, default=False),
    "dp_train_skip_neighbor_stat": Field(as_bool, default=False,
                                         doc="dp train --skip-neighbor-stat (needs every sel explicit)"),
    "training_resume": Field(one_of("checkpoint", "from_scratch"), default="checkpoint",
                             doc="a training killed mid-way: continue from its checkpoint "
                                 "(DP-GEN), or start it over (reproduces the uninterrupted model)"),
    "mlp_engine": Field(one_of("dp"), default="dp"),
    "model_devi_engine": Field(one_of("lammps"), default="lammps"),
    "model_devi_dt": Field(positive(as_float), doc="MD time step in ps"),
    "model_devi_skip": Field(positive(as_int, strict=False), default=0),
    "model_devi_f_trust_lo": Field(parse_trust, doc="lower force trust level (eV/Å)"),
    "model_devi_f_trust_hi": Field(parse_trust, doc="upper force trust level (eV/Å)"),
    "model_devi_v_trust_lo": Field(parse_trust, default=lambda: TrustLevel(None)),
    "model_devi_v_trust_hi": Field(parse_trust, default=lambda: TrustLevel(None)),
    "model_devi_adapt_trust_lo": Field(as_bool, default=False),
    "model_devi_numb_candi_f": Field(positive(as_int, strict=False), default=None),
    "model_devi_perc_candi_f": Field(in_range(as_float, 0.0, 100.0), default=None),
    "model_devi_numb_candi_v": Field(positive(as_int, strict=False), default=None),
    "model_devi_perc_candi_v": Field(in_range(as_float, 0.0, 100.0), default=None),
    "model_devi_clean_traj": Field(either(as_bool, positive(as_int, strict=False),
                                          expected="true/false or an integer"), default=True),
    "model_devi_taut": Field(positive(as_float), default=0.1),
    "model_devi_taup": Field(positive(as_float), default=0.5),
    "model_devi_jobs": Field(list_of(parse_job, min_len=1), doc="list of exploration jobs"),
    **EXPLORE_FIELDS,
    "fp_style": Field(as_str, doc="labeler name: " + ", ".join(labeler_names())),
    "fp_task_max": Field(positive(as_int, strict=False), doc="max candidates labeled per system"),
    "detailed_report_make_fp": Field(as_bool, default=True,
                                     doc="accepted either way: selection.json always has the details"),
    "fp_pick": Field(one_of(*PICKERS.names()), default="random",
                     doc="which candidates to label: " + ", ".join(PICKERS.names())),
    "fp_task_min": Field(positive(as_int, strict=False), default=0),
    "fp_accurate_threshold": Field(in_range(as_float, 0.0, 1.0), default=1.0),
    "fp_accurate_soft_threshold": Field(in_range(as_float, 0.0, 1.0), default=None),
    "ratio_failed": Field(in_range(as_float, 0.0, 1.0), default=0.05),
    "seed": Field(positive(as_int, strict=False), default=1),
    "fp_skip_bad_box": Field(_bad_box_criteria, default=dict),
    "fp_min_distance": Field(either(positive(as_float), as_dict, expected="a distance (Å) or "
                                    "{\"A-B\": distance}"), default=None),
    "validation_data_prefix": Field(as_str, default=""),
    "validation_data_sys": Field(list_of(as_str, min_len=1), default=list,
                                 doc="deepmd/npy dirs of held-out labeled data (never trained on)"),
    "convergence": Field(parse_convergence, default=None),
    "shuffle_poscar": Field(_false_only("shuffling the atoms of POSCARs is not supported yet"),
                            default=False),
}


@dataclass(frozen=True)
class RunParams:
    type_map: tuple[str, ...]
    mass_map: tuple[float, ...]
    init_data_prefix: str
    init_data_sys: tuple[str, ...]
    init_batch_size: Any
    sys_configs_prefix: str
    sys_configs: tuple[tuple[str, ...], ...]
    sys_batch_size: Any
    sys_format: str
    numb_models: int
    default_training_param: dict[str, Any]
    model_devi_dt: float
    model_devi_skip: int
    f_trust_lo: TrustLevel
    f_trust_hi: TrustLevel
    v_trust_lo: TrustLevel
    v_trust_hi: TrustLevel
    model_devi_clean_traj: bool | int
    model_devi_taut: float
    model_devi_taup: float
    model_devi_jobs: tuple[ExploreJob, ...]
    fp_style: str
    fp_settings: Any
    fp_task_max: int
    fp_task_min: int
    fp_accurate_threshold: float
    fp_accurate_soft_threshold: float
    ratio_failed: float
    seed: int
    skip_bad_box: dict[str, float] = field(default_factory=dict)
    min_distance: dict[tuple[int, int], float] = field(default_factory=dict)
    adaptive: AdaptiveTrust | None = None
    validation_data_prefix: str = ""
    validation_data_sys: tuple[str, ...] = ()
    convergence: tuple[StopCriterion, ...] = ()
    fp_pick: str = "random"
    train_backend: str = "tensorflow"
    warm_start: WarmStart = field(default_factory=WarmStart)
    dp_compress: bool = False
    skip_neighbor_stat: bool = False
    training_resume: str = "checkpoint"
    explore: ExploreOptions = field(default_factory=ExploreOptions)

    @property
    def backend(self) -> Backend:
        return BACKENDS[self.train_backend]

    def training_param(self) -> dict[str, Any]:
        """A fresh deep copy of ``default_training_param`` (the settings are never mutated)."""
        return copy.deepcopy(self.default_training_param)

    def trust(self, job: ExploreJob, sys_idx: int) -> tuple[float, float, float | None, float | None]:
        f_lo = (job.f_trust_lo or self.f_trust_lo).for_system(sys_idx)
        f_hi = (job.f_trust_hi or self.f_trust_hi).for_system(sys_idx)
        if f_lo is None:
            f_lo = self.f_trust_lo.for_system(sys_idx)
        if f_hi is None:
            f_hi = self.f_trust_hi.for_system(sys_idx)
        assert f_lo is not None and f_hi is not None  # checked at load time
        return f_lo, f_hi, self.v_trust_lo.for_system(sys_idx), self.v_trust_hi.for_system(sys_idx)

    def effective(self) -> dict[str, Any]:
        """The effective settings as plain JSON (for ``dpgen check``)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, TrustLevel):
                value = value.as_json()
            elif name == "model_devi_jobs":
                value = [job_json(job) for job in value]
            elif name == "convergence":
                value = [c.as_json() for c in value]
            elif name == "adaptive":
                value = None if value is None else value.__dict__
            elif name in ("fp_settings", "warm_start", "explore"):
                value = value.as_json()
            elif name == "min_distance":
                value = {f"{self.type_map[a]}-{self.type_map[b]}": d for (a, b), d in value.items()}
            out[name] = value
        return out


def _check_trust(p: dict[str, Any], nsys: int) -> None:
    for j, job in enumerate(p["model_devi_jobs"]):
        for tl, key in ((job.f_trust_lo, "model_devi_f_trust_lo"), (job.f_trust_hi, "model_devi_f_trust_hi")):
            if tl is not None:
                tl.check_systems(nsys, f"model_devi_jobs[{j}].{key}")
    for kind in ("f", "v"):
        lo, hi = p[f"model_devi_{kind}_trust_lo"], p[f"model_devi_{kind}_trust_hi"]
        lo.check_systems(nsys, f"model_devi_{kind}_trust_lo")
        hi.check_systems(nsys, f"model_devi_{kind}_trust_hi")
        for tl, key in ((lo, f"model_devi_{kind}_trust_lo"), (hi, f"model_devi_{kind}_trust_hi")):
            if tl.per_system and tl.default is None and kind == "f":
                missing = [i for i in range(nsys) if i not in tl.per_system]
                if missing:
                    raise UserError(f"no value for system {missing[0]}", key,
                                    f"one value per sys_configs entry ({nsys})")
        for i in range(nsys):
            a, b = lo.for_system(i), hi.for_system(i)
            if (a is None) != (b is None):
                raise UserError(f"only one of the {kind} trust levels is set for system {i}",
                                f"model_devi_{kind}_trust_lo/hi", "set both or neither")
            if a is not None and b is not None and not a < b:
                raise UserError(f"trust_lo {a} is not below trust_hi {b} for system {i}",
                                f"model_devi_{kind}_trust_lo", "lo < hi")


def _check_per_type(raw: dict[str, Any], fp_style: str, ntypes: int) -> None:
    """The labeler's per-type lists (pseudopotentials, orbitals) have one entry per type."""
    for key in labeler_class(fp_style).PER_TYPE:
        value = raw.get(key)
        if isinstance(value, list) and len(value) != ntypes:
            raise UserError(f"{len(value)} entries for {ntypes} types", key, "one per type_map entry, in "
                            "type_map order")


def _check_types(p: dict[str, Any]) -> None:
    """type_map has unique names; mass_map ("auto": ASE's masses) has one mass per type."""
    ntypes = len(p["type_map"])
    if len(set(p["type_map"])) != ntypes:
        raise UserError("repeated element", "type_map", "unique element names")
    if p["mass_map"] == "auto":
        from ase.data import atomic_masses, atomic_numbers

        unknown = [el for el in p["type_map"] if el not in atomic_numbers]
        if unknown:
            raise UserError(f"no element named {unknown[0]!r} for mass_map 'auto'", "type_map",
                            "chemical symbols, or give mass_map explicitly")
        p["mass_map"] = [float(atomic_masses[atomic_numbers[el]]) for el in p["type_map"]]
    if len(p["mass_map"]) != ntypes:
        raise UserError(f"{len(p['mass_map'])} masses for {ntypes} types", "mass_map",
                        "one mass per type_map entry")


def parse_run_params(raw: dict[str, Any]) -> RunParams:
    """Validate a param.json mapping. Raises :class:`UserError` on the first problem."""
    fp_style = raw.get("fp_style")
    if fp_style in DPGEN_FP_STYLES:
        raise UserError(f"fp_style '{fp_style}' is not supported yet", "fp_style",
                        "one of " + ", ".join(labeler_names()))
    if not isinstance(fp_style, str):
        raise UserError("missing or not a string", "fp_style", "one of " + ", ".join(labeler_names()))
    fp_settings, base, foreign = split_labeler_keys(raw, fp_style, "fp_style")
    p = parse_section(drop_off_switches(base, OFF_VALUES), _FIELDS, "", UNSUPPORTED, foreign)

    _check_types(p)
    _check_per_type(raw, fp_style, len(p["type_map"]))
    nsys = len(p["sys_configs"])
    for key, n in (("init_batch_size", len(p["init_data_sys"])), ("sys_batch_size", nsys)):
        if isinstance(p[key], list) and len(p[key]) < n:
            raise UserError(f"{len(p[key])} values for {n} systems", key,
                            "one batch size per system, or a single 'auto'")
    for j, job in enumerate(p["model_devi_jobs"]):
        for s in job.sys_idx:
            if s >= nsys:
                raise UserError(f"system index {s} out of range", f"model_devi_jobs[{j}].sys_idx",
                                f"an index below {nsys} (the length of sys_configs)")
    _check_trust(p, nsys)
    soft = p["fp_accurate_soft_threshold"]
    if soft is None:
        soft = p["fp_accurate_threshold"]
    if soft > p["fp_accurate_threshold"]:
        raise UserError("soft threshold above the hard one", "fp_accurate_soft_threshold",
                        f"a value ≤ fp_accurate_threshold ({p['fp_accurate_threshold']})")
    _check_convergence(p)
    tparam, warm = _check_training(p)

    return RunParams(
        type_map=tuple(p["type_map"]),
        mass_map=tuple(p["mass_map"]),
        init_data_prefix=p["init_data_prefix"],
        init_data_sys=tuple(p["init_data_sys"]),
        init_batch_size=p["init_batch_size"],
        sys_configs_prefix=p["sys_configs_prefix"],
        sys_configs=tuple(tuple(s) for s in p["sys_configs"]),
        sys_batch_size=p["sys_batch_size"],
        sys_format=p["sys_format"],
        numb_models=p["numb_models"],
        default_training_param=tparam,
        model_devi_dt=p["model_devi_dt"],
        model_devi_skip=p["model_devi_skip"],
        f_trust_lo=p["model_devi_f_trust_lo"],
        f_trust_hi=p["model_devi_f_trust_hi"],
        v_trust_lo=p["model_devi_v_trust_lo"],
        v_trust_hi=p["model_devi_v_trust_hi"],
        model_devi_clean_traj=p["model_devi_clean_traj"],
        model_devi_taut=p["model_devi_taut"],
        model_devi_taup=p["model_devi_taup"],
        model_devi_jobs=tuple(p["model_devi_jobs"]),
        fp_style=fp_style,
        fp_settings=fp_settings,
        fp_task_max=p["fp_task_max"],
        fp_pick=p["fp_pick"],
        fp_task_min=p["fp_task_min"],
        fp_accurate_threshold=p["fp_accurate_threshold"],
        fp_accurate_soft_threshold=soft,
        ratio_failed=p["ratio_failed"],
        seed=p["seed"],
        skip_bad_box=p["fp_skip_bad_box"],
        min_distance=_min_distance(p["fp_min_distance"], p["type_map"]),
        adaptive=_adaptive(p),
        validation_data_prefix=p["validation_data_prefix"],
        validation_data_sys=tuple(p["validation_data_sys"]),
        convergence=p["convergence"] or (),
        train_backend=p["train_backend"],
        warm_start=warm,
        dp_compress=p["dp_compress"],
        skip_neighbor_stat=p["dp_train_skip_neighbor_stat"],
        training_resume=p["training_resume"],
        explore=explore_options(p),
    )


def _check_training(p: dict[str, Any]) -> tuple[dict[str, Any], WarmStart]:
    """The DeePMD-kit input against its schema and the backend, type_map, and the keys that say
    how models start; returns the input and the warm start."""
    tparam = p["default_training_param"]
    backend = BACKENDS[p["train_backend"]]
    check_training_input(tparam, "default_training_param", backend)
    for pair in sorted(set(p["model_devi_activation_func"] or ())):  # each variant the models train
        variant = copy.deepcopy(tparam)
        apply_activation(variant, pair)
        check_training_input(variant, f"model_devi_activation_func ({'/'.join(pair)}) in "
                             "default_training_param", backend)
    warm = _warm_start(p)
    check_combination(warm, p["numb_models"], backend, tparam["model"].get("descriptor", {}),
                      p["dp_compress"])
    if p["dp_train_skip_neighbor_stat"] and _auto_sel(tparam["model"].get("descriptor", {})):
        raise UserError("a descriptor 'sel' is 'auto', which DeePMD-kit sets from the neighbour "
                        "statistics that dp_train_skip_neighbor_stat skips",
                        "dp_train_skip_neighbor_stat", "false, or every sel given as numbers")
    tmap = tparam["model"].get("type_map")
    if tmap is not None and list(tmap) != list(p["type_map"]):
        raise UserError(f"type_map {tmap} differs from the top-level type_map {p['type_map']}",
                        "default_training_param.model.type_map", "the same list, or leave it out")
    return tparam, warm


def _auto_sel(node: Any) -> bool:
    """Whether a descriptor (or one inside it) leaves ``sel`` to DeePMD-kit ("auto", "auto:1.1",
    or absent from an se_* descriptor, whose default is "auto")."""
    if isinstance(node, list):
        return any(_auto_sel(n) for n in node)
    if not isinstance(node, dict):
        return False
    sel = node.get("sel", "auto" if str(node.get("type", "")).startswith("se_") else None)
    return isinstance(sel, str) or any(_auto_sel(v) for v in node.values() if isinstance(v, (dict, list)))


_REUSE_KEYS = ("training_reuse_old_ratio", "training_reuse_numb_steps", "training_reuse_start_lr",
               "training_reuse_start_pref_e", "training_reuse_start_pref_f", "training_reuse_decay_steps")


def _warm_start(p: dict[str, Any]) -> WarmStart:
    reuse = None
    if p["training_reuse_iter"] is None:
        for key in _REUSE_KEYS:
            if p[key] is not None:
                raise UserError(f"'{key}' has no effect without training_reuse_iter", key,
                                "set training_reuse_iter (the first iteration that reuses the "
                                "previous models), or remove it")
    else:
        ratio, factor = p["training_reuse_old_ratio"] or (None, 10.0)
        reuse = Reuse(start_iter=p["training_reuse_iter"], old_ratio=ratio, auto_factor=factor,
                      numb_steps=p["training_reuse_numb_steps"], start_lr=p["training_reuse_start_lr"],
                      start_pref_e=p["training_reuse_start_pref_e"],
                      start_pref_f=p["training_reuse_start_pref_f"],
                      decay_steps=p["training_reuse_decay_steps"])
    return WarmStart(init_model=p["training_init_model"],
                     iter0_model_path=tuple(p["training_iter0_model_path"]),
                     init_frozen_model=tuple(p["training_init_frozen_model"]),
                     finetune_model=tuple(p["training_finetune_model"]), reuse=reuse)


def _check_convergence(p: dict[str, Any]) -> None:
    """The convergence section against the rest: what each criterion needs, and max_iter."""
    criteria = p["convergence"] or ()
    have = {"model_devi_adapt_trust_lo": p["model_devi_adapt_trust_lo"],
            "validation_data_sys": bool(p["validation_data_sys"])}
    for i, c in enumerate(criteria):
        for key in c.needs():
            if not have[key]:
                raise UserError(f"convergence type '{c.name}' needs {key}", f"convergence[{i}]",
                                f"set {key}" + (": true" if key.startswith("model_devi") else
                                                " (deepmd/npy data never trained on)"))
        if c.name == "fixed-levels" and p["model_devi_adapt_trust_lo"]:
            raise UserError("fixed-levels judges the accurate ratio, which adaptive trust_lo sets by "
                            "model_devi_numb_candi_f", f"convergence[{i}]", "adaptive-lower with "
                            "model_devi_adapt_trust_lo, or fixed trust levels")
    for j, job in enumerate(p["model_devi_jobs"]):
        if job.max_iter is not None and not criteria:
            raise UserError("max_iter without a convergence section", f"model_devi_jobs[{j}].max_iter",
                            "a 'convergence' section saying when the job is done")


def load_run_params(path: Path) -> RunParams:
    return load_config(path, parse_run_params)
