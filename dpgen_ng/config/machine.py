"""DP-GEN's v1 ``machine.json``: per stage ``command``, ``machine``, ``resources`` and user files.

``machine`` and ``resources`` are checked with dpdispatcher's own schemas (strict). Extras of ours,
per stage: ``check_interval`` (seconds between scheduler polls; dpdispatcher's default is 30 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dpgen_ng.config.fields import (
    Field,
    as_dict,
    as_float,
    as_str,
    list_of,
    nearest,
    parse_section,
    positive,
)
from dpgen_ng.errors import UserError
from dpgen_ng.io import load_config

STAGES = ("train", "model_devi", "fp")
# How often to poll when the stage does not say: a local shell is cheap to ask, a scheduler is not.
DEFAULT_POLL = MappingProxyType({"Shell": 0.25})
DEFAULT_POLL_SCHEDULER = 10.0


@dataclass(frozen=True)
class StageMachine:
    """One stage's dispatch settings, already validated."""

    stage: str
    command: str
    machine: dict[str, Any]
    resources: dict[str, Any]
    user_forward_files: tuple[str, ...]
    user_backward_files: tuple[str, ...]
    check_interval: float

    @property
    def batch_type(self) -> str:
        return self.machine["batch_type"]

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine,
            "resources": self.resources,
            "user_forward_files": list(self.user_forward_files),
            "user_backward_files": list(self.user_backward_files),
            "check_interval": self.check_interval,
        }


def _dargs_error(exc: Exception, where: str) -> UserError:
    text = str(exc).replace("[at root location] ", "").strip()
    loc = ""
    if text.startswith("[at location `"):
        loc, _, text = text[len("[at location `"):].partition("`] ")
        loc = "." + loc
    return UserError(text.rstrip(". "), where + loc, "see dpdispatcher's Machine/Resources docs")


def _machine(value: Any, where: str) -> dict[str, Any]:
    from dpdispatcher import Machine
    from dpdispatcher.base_context import BaseContext
    from dpdispatcher.machine import Machine as MachineBase

    d = {k: v for k, v in as_dict(value, where).items() if not k.startswith("_")}
    batch = d.get("batch_type")
    if batch not in MachineBase.subclasses_dict:
        kinds = sorted(k for k in MachineBase.subclasses_dict if k[0].isupper())
        raise UserError(f"unknown batch_type {batch!r}", f"{where}.batch_type", "one of " + ", ".join(kinds))
    ctx = d.get("context_type")
    if ctx not in BaseContext.subclasses_dict:
        kinds = sorted(k for k in BaseContext.subclasses_dict if k.endswith("Context"))
        raise UserError(f"unknown context_type {ctx!r}", f"{where}.context_type",
                        "one of " + ", ".join(kinds))
    local_root = d.pop("local_root", "./")
    if local_root not in ("./", ".", None):
        raise UserError(f"local_root is {local_root!r}", f"{where}.local_root",
                        "'./' (dpgen_ng sets it to each stage directory, as DP-GEN does)")
    arg = Machine.arginfo()
    try:
        d = arg.normalize_value({**d, "local_root": "./"}, trim_pattern="_*")
        arg.check_value(d, strict=True)
    except Exception as exc:  # dargs raises its own error types
        raise _dargs_error(exc, where) from None
    return d


def _resources(value: Any, where: str, batch_type: str) -> dict[str, Any]:
    from dpdispatcher import Resources

    d = {k: v for k, v in as_dict(value, where).items() if not k.startswith("_")}
    d.setdefault("number_node", 1)
    d.setdefault("cpu_per_node", 1)
    d.setdefault("gpu_per_node", 0)
    d.setdefault("queue_name", "")
    d.setdefault("group_size", 1)
    d.setdefault("kwargs", {})  # LSF requires it; dpdispatcher fills every batch type's defaults
    arg = Resources.arginfo(detail_kwargs=True)
    try:
        d = arg.normalize_value({**d, "batch_type": batch_type}, trim_pattern="_*")
        arg.check_value(d, strict=True)
    except Exception as exc:
        raise _dargs_error(exc, where) from None
    return d


_STAGE_FIELDS = {
    "command": Field(as_str, doc="the program to run, e.g. 'dp', 'lmp', 'xtb'"),
    "machine": Field(as_dict, doc="a dpdispatcher machine"),
    "resources": Field(as_dict, doc="dpdispatcher resources"),
    "user_forward_files": Field(list_of(as_str), default=list),
    "user_backward_files": Field(list_of(as_str), default=list),
    "check_interval": Field(positive(as_float), default=None),
}


def parse_stage(raw: Any, stage: str, where: str) -> StageMachine:
    if isinstance(raw, list):
        if len(raw) != 1:
            raise UserError(f"{len(raw)} machines for one stage", where,
                            "a single machine (several per stage are not supported yet)")
        raw = raw[0]
    d = parse_section(raw, _STAGE_FIELDS, where)
    machine = _machine(d["machine"], f"{where}.machine")
    resources = _resources(d["resources"], f"{where}.resources", machine["batch_type"])
    interval = d["check_interval"]
    if interval is None:
        interval = DEFAULT_POLL.get(machine["batch_type"], DEFAULT_POLL_SCHEDULER)
    return StageMachine(stage, d["command"], machine, resources, tuple(d["user_forward_files"]),
                        tuple(d["user_backward_files"]), interval)


@dataclass(frozen=True)
class MachineSettings:
    stages: dict[str, StageMachine]

    def __getitem__(self, stage: str) -> StageMachine:
        return self.stages[stage]

    def as_json(self) -> dict[str, Any]:
        return {name: s.as_json() for name, s in self.stages.items()}


def parse_machine(raw: dict[str, Any], required: tuple[str, ...] = STAGES) -> MachineSettings:
    version = raw.get("api_version")
    if version is None:
        raise UserError("missing 'api_version'", "api_version",
                        "\"1.0\" (DP-GEN's v1 machine format; the v0 format is not supported)")
    try:
        major = float(str(version))
    except ValueError:
        raise UserError(f"api_version {version!r}", "api_version", "\"1.0\"") from None
    if major < 1.0:
        raise UserError(f"api_version {version!r} is the old v0 format", "api_version", "\"1.0\"")
    sections = tuple(dict.fromkeys([*STAGES, *required]))  # dpgen test may name its own sections
    known = {"api_version", "deepmd_version", *sections}
    for key in raw:
        if key.startswith("_") or key in known:
            continue
        raise UserError(f"unknown key '{key}'", key, nearest(key, sorted(known)))
    stages = {}
    for stage in sections:
        if stage in raw:
            stages[stage] = parse_stage(raw[stage], stage, stage)
        elif stage in required:
            raise UserError(f"missing section '{stage}'", "<top>",
                            "a section with command, machine, resources")
    return MachineSettings(stages)


def load_machine(path: Path, required: tuple[str, ...] = STAGES) -> MachineSettings:
    return load_config(path, lambda raw: parse_machine(raw, required))
