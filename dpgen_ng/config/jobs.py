"""One entry of ``model_devi_jobs`` (DP-GEN's keys plus max_iter / fatal_at_max / grow_nsteps), and
the trust levels a job or the param may give (a value, a list by system, or a dict)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpgen_ng.config.fields import (
    Field,
    as_bool,
    as_dict,
    as_float,
    as_int,
    as_str,
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
from dpgen_ng.explore.lammps import ENSEMBLES
from dpgen_ng.explore.template import UNSUPPORTED_TEMPLATE_KEYS, Template, check_template

JOB_UNSUPPORTED = {
    "pka_e": "PKA kicks are not supported yet",
    "nbeads": "path-integral MD is not supported yet",
    "neidelay": "remove it; not supported yet",
    "s_t": "skip-training flags are not supported yet",
    "sk_tr": "skip-training flags are not supported yet",
    "skip_train": "skip-training flags are not supported yet",
    "skip_training": "skip-training flags are not supported yet",
    "model_devi_v_trust_lo": "per-job virial trust levels are not supported yet",
    "model_devi_v_trust_hi": "per-job virial trust levels are not supported yet",
}


LAMMPS_MAX_STEPS = 2**31 - 1  # `run N` refuses a larger N


@dataclass(frozen=True)
class TrustLevel:
    """A trust level: one value, a list indexed by sys_configs index, or a dict keyed by it."""

    default: float | None
    per_system: dict[int, float] = field(default_factory=dict)

    def for_system(self, sys_idx: int) -> float | None:
        return self.per_system.get(sys_idx, self.default)

    def check_systems(self, nsys: int, where: str) -> None:
        """Per-system values only for systems that exist (a longer list is a mistake, not noise)."""
        beyond = sorted(i for i in self.per_system if i >= nsys)
        if beyond:
            raise UserError(f"a value for system {beyond[0]}, but sys_configs has {nsys} system(s)",
                            where, f"one value per sys_configs entry (indices 0-{nsys - 1})")

    def as_json(self) -> Any:
        if not self.per_system:
            return self.default
        return {str(k): v for k, v in sorted(self.per_system.items())}


def parse_trust(value: Any, where: str) -> TrustLevel:
    if value is None:
        return TrustLevel(None)
    if isinstance(value, (list, tuple)):
        vals = [positive(as_float, strict=False)(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return TrustLevel(None, dict(enumerate(vals)))
    if isinstance(value, dict):
        per = {}
        for k, v in value.items():
            if not str(k).isdigit():
                raise UserError(f"key {k!r}", where, "system indices as keys (e.g. \"0\")")
            per[int(k)] = positive(as_float, strict=False)(v, f"{where}.{k}")
        return TrustLevel(None, per)
    return TrustLevel(positive(as_float, strict=False)(value, where))


@dataclass(frozen=True)
class ExploreJob:
    """One entry of ``model_devi_jobs``: MD runs of every conf of ``sys_idx`` at each T × P."""

    sys_idx: tuple[int, ...]
    temps: tuple[float, ...]
    press: tuple[float, ...]
    trj_freq: int
    nsteps: int
    ensemble: str
    dt: float | None = None
    taut: float | None = None
    taup: float | None = None
    f_trust_lo: TrustLevel | None = None
    f_trust_hi: TrustLevel | None = None
    max_iter: int | None = None
    fatal_at_max: bool = True
    grow_nsteps: GrowNsteps | None = None
    template: Template | None = None  # DP-GEN's template jobs: temps/ensemble/nsteps are the file's


@dataclass(frozen=True)
class GrowNsteps:
    """ArcaNN's heuristic for a repeated job: after an iteration with an accurate ratio of at least
    ``if_accurate_above``, the next repeat runs ``factor`` times longer, up to ``max_factor`` × nsteps."""

    factor: int = 2
    max_factor: int = 4
    if_accurate_above: float = 0.8


_GROW_FIELDS = {
    "factor": Field(in_range(as_int, 2, 100), default=2),
    "max_factor": Field(in_range(as_int, 1, 10**4), default=4),
    "if_accurate_above": Field(in_range(as_float, 0.0, 1.0), default=0.8),
}


def _grow_nsteps(value: Any, where: str) -> GrowNsteps | None:
    if isinstance(value, bool):
        return GrowNsteps() if value else None
    return GrowNsteps(**parse_section(value, _GROW_FIELDS, where))


_JOB_FIELDS = {
    "sys_idx": Field(list_of(in_range(as_int, 0, 10**6), min_len=1), doc="list of sys_configs indices"),
    "temps": Field(list_of(positive(as_float), min_len=1), aliases=("Ts",), doc="list of temperatures (K)"),
    "press": Field(list_of(as_float), default=list, aliases=("Ps",), doc="list of pressures (bar)"),
    "trj_freq": Field(positive(as_int), aliases=("t_freq", "traj_freq"),
                      doc="dump/deviation interval in steps"),
    "nsteps": Field(in_range(as_int, 1, LAMMPS_MAX_STEPS), doc="number of MD steps"),
    "ensemble": Field(one_of(*ENSEMBLES), aliases=("ens",), doc="one of " + ", ".join(ENSEMBLES)),
    "dt": Field(lambda v, w: None if v is None else positive(as_float)(v, w), default=None,
                doc="this job's MD time step (ps); model_devi_dt when unset"),
    "taut": Field(positive(as_float), default=None),
    "taup": Field(positive(as_float), default=None),
    "model_devi_f_trust_lo": Field(parse_trust, default=None),
    "model_devi_f_trust_hi": Field(parse_trust, default=None),
    "max_iter": Field(positive(as_int), default=None,
                      doc="repeat the job until the convergence criteria hold, at most this often"),
    "fatal_at_max": Field(as_bool, default=None),
    "grow_nsteps": Field(_grow_nsteps, default=None),
}
_TEMPLATE_FIELDS = {
    "template": Field(as_dict, doc="{\"lmp\": a LAMMPS input template}"),
    "rev_mat": Field(as_dict, default=None, doc="{\"lmp\": {KEY: [values]}}: one task per combination"),
    "sys_rev_mat": Field(as_dict, default=None, doc="{sys_idx: {\"lmp\": {KEY: [values]}}}"),
}


def _rev_pairs(value: Any, where: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``{"lmp": {KEY: [values]}}`` → ((KEY, values), ...); other engines' sections refused."""
    d = as_dict(value, where)
    for key in d:
        if key != "lmp":
            raise UserError(f"'{key}' section", f"{where}.{key}",
                            UNSUPPORTED_TEMPLATE_KEYS.get(key, "only 'lmp' (LAMMPS) is supported"))
    pairs = []
    for key, values in as_dict(d.get("lmp", {}), f"{where}.lmp").items():
        vals = values if isinstance(values, list) else [values]
        if not vals:
            raise UserError("an empty list", f"{where}.lmp.{key}", "at least one value")
        pairs.append((str(key), tuple(vals)))
    return tuple(pairs)


def _template(d: dict[str, Any], where: str) -> Template:
    tdict = as_dict(d["template"], f"{where}.template")
    for key in tdict:
        if key != "lmp":
            raise UserError(f"template '{key}'", f"{where}.template.{key}",
                            UNSUPPORTED_TEMPLATE_KEYS.get(key, "only 'lmp' (a LAMMPS input)"))
    if "lmp" not in tdict:
        raise UserError("no 'lmp' file", f"{where}.template", "{\"lmp\": \"path/to/input.lammps\"}")
    path = Path(as_str(tdict["lmp"], f"{where}.template.lmp")).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"{path} not found", f"{where}.template.lmp", "a LAMMPS input template")
    text = path.read_text()
    check_template(text, f"{where}.template.lmp ({path})")
    sys_rev = {}
    for k, v in as_dict(d["sys_rev_mat"] or {}, f"{where}.sys_rev_mat").items():
        if not str(k).isdigit():
            raise UserError(f"key {k!r}", f"{where}.sys_rev_mat", "system indices as keys (e.g. \"0\")")
        sys_rev[int(k)] = _rev_pairs(v, f"{where}.sys_rev_mat.{k}")
    return Template(str(path), text, _rev_pairs(d["rev_mat"] or {}, f"{where}.rev_mat"), sys_rev)


def parse_template_job(d: dict[str, Any], where: str) -> ExploreJob:
    """A template job: the file sets temperatures, ensemble and length; we set the models and dumps."""
    for key in ("temps", "press", "ensemble", "nsteps", "grow_nsteps", "dt", "taut", "taup"):
        if d.get(key) not in (None, [], ()):
            if key in ("temps", "press", "ensemble", "nsteps"):  # DP-GEN ignores them: so do we
                continue
            raise UserError(f"'{key}' in a template job", f"{where}.{key}",
                            "set it in the template (or through rev_mat)")
    tmpl = _template(d, where)
    return ExploreJob(sys_idx=tuple(d["sys_idx"]), temps=(), press=(), trj_freq=d["trj_freq"], nsteps=0,
                      ensemble="template", f_trust_lo=d["model_devi_f_trust_lo"],
                      f_trust_hi=d["model_devi_f_trust_hi"], max_iter=d["max_iter"],
                      fatal_at_max=True if d["fatal_at_max"] is None else d["fatal_at_max"], template=tmpl)


def parse_job(value: Any, where: str) -> ExploreJob:
    if isinstance(value, dict) and "template" in value:
        fields = {**_JOB_FIELDS, **_TEMPLATE_FIELDS}
        fields.update({k: Field(fields[k].parse, default=None, aliases=fields[k].aliases)
                       for k in ("temps", "nsteps", "ensemble")})
        d = parse_section(value, fields, where, JOB_UNSUPPORTED)
        if len(set(d["sys_idx"])) != len(d["sys_idx"]):
            raise UserError("repeated system index", f"{where}.sys_idx", "unique indices")
        return parse_template_job(d, where)
    for key in _TEMPLATE_FIELDS:
        if isinstance(value, dict) and key in value:
            raise UserError(f"'{key}' without template", f"{where}.{key}",
                            "a template: {\"lmp\": file} in the same job")
    d = parse_section(value, _JOB_FIELDS, where, JOB_UNSUPPORTED)
    ens = ENSEMBLES[d["ensemble"]]
    if ens.needs_press and not d["press"]:
        raise UserError(f"ensemble '{d['ensemble']}' needs pressures", f"{where}.press",
                        "a non-empty list of pressures (bar)")
    if len(set(d["sys_idx"])) != len(d["sys_idx"]):
        raise UserError("repeated system index", f"{where}.sys_idx", "unique indices")
    for key in ("fatal_at_max", "grow_nsteps"):
        if d[key] is not None and d["max_iter"] is None:
            raise UserError(f"'{key}' without max_iter", f"{where}.{key}",
                            "a max_iter in the same job (it applies to repeated jobs only)")
    grow = d["grow_nsteps"]
    if grow is not None and d["nsteps"] * grow.max_factor > LAMMPS_MAX_STEPS:
        raise UserError(f"{d['nsteps']} × {grow.max_factor} steps", f"{where}.grow_nsteps.max_factor",
                        f"at most {LAMMPS_MAX_STEPS} steps in all (LAMMPS' limit)")
    return ExploreJob(
        sys_idx=tuple(d["sys_idx"]),
        temps=tuple(d["temps"]),
        # DP-GEN examples give press for nvt too; it does not apply there (one task per T)
        press=tuple(d["press"]) if d["press"] and ens.needs_press else (),
        trj_freq=d["trj_freq"],
        nsteps=d["nsteps"],
        ensemble=d["ensemble"],
        dt=d["dt"],
        taut=d["taut"],
        taup=d["taup"],
        f_trust_lo=d["model_devi_f_trust_lo"],
        f_trust_hi=d["model_devi_f_trust_hi"],
        max_iter=d["max_iter"],
        fatal_at_max=True if d["fatal_at_max"] is None else d["fatal_at_max"],
        grow_nsteps=d["grow_nsteps"],
    )


def job_json(job: ExploreJob) -> dict[str, Any]:
    """One exploration job as plain JSON (unset optional keys left out)."""
    out = {}
    for k, v in job.__dict__.items():
        if v is None or v == () or (k == "fatal_at_max" and job.max_iter is None):
            continue
        if isinstance(v, Template):
            out.update(v.as_json())
            continue
        out[k] = v.as_json() if isinstance(v, TrustLevel) else v.__dict__ if isinstance(v, GrowNsteps) else v
    return out


def key_statuses() -> dict[str, str]:
    """{model_devi_jobs key: what happens to it here}."""
    return fields_key_statuses({**_JOB_FIELDS, **_TEMPLATE_FIELDS}, JOB_UNSUPPORTED)
