"""DP-GEN's v1 ``machine.json``: per stage ``command``, ``machine``, ``resources`` and user files.

``machine`` and ``resources`` are checked with dpdispatcher's own schemas; a key dpdispatcher does
not know (and itself ignores) gets a warning naming it and is dropped. Extras of ours, per stage:
``check_interval`` (seconds between scheduler polls; dpdispatcher's default is 30 s). A file without
``api_version`` is read as v1, as DP-GEN does.
"""

from __future__ import annotations

import difflib
import logging
import re
import shlex
import subprocess
import sys
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

LOG = logging.getLogger(__name__)
STAGES = ("train", "model_devi", "fp")
# DP-GEN's v0 machine.json (before dpdispatcher): top-level keys it had and v1 does not
V0_KEYS = ("deepmd_path", "python_path", "lmp_command", "fp_command", "train_machine", "train_resources",
           "model_devi_machine", "model_devi_resources", "fp_machine", "fp_resources")
# How often to poll when the stage does not say: a local shell is cheap to ask, a scheduler is not.
DEFAULT_POLL = MappingProxyType({"Shell": 0.25})
DEFAULT_POLL_SCHEDULER = 10.0
LOCAL_CONTEXT_NAMES = ("LocalContext", "Local", "local", "localcontext")


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
    python: str = "python3"  # a Python that imports dpgen_ng where the jobs run (ASE-driven jobs)

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
            "python": self.python,
        }


def _dargs_error(exc: Exception, where: str) -> UserError:
    text = str(exc).replace("[at root location] ", "").strip()
    loc = ""
    if text.startswith("[at location `"):
        loc, _, text = text[len("[at location `"):].partition("`] ")
        loc = "." + loc
    return UserError(text.rstrip(". "), where + loc, "see dpdispatcher's Machine/Resources docs")


def _names(arg: Any) -> set[str]:
    """Every key name a dargs schema defines, at any depth."""
    out: set[str] = set()
    for sub in getattr(arg, "sub_fields", {}).values():
        out |= {sub.name, *sub.alias, *_names(sub)}
    for variant in getattr(arg, "sub_variants", {}).values():
        for choice in variant.choice_dict.values():
            out |= _names(choice)
    return out


def _check_dargs(arg: Any, d: dict[str, Any], where: str) -> dict[str, Any]:
    """dpdispatcher's schema ``arg`` on ``d``: keys it does not define are dropped with a warning
    (dpdispatcher itself ignores them); any other problem is a one-line error."""
    try:
        d = arg.normalize_value(d, trim_pattern="_*")
    except Exception as exc:  # dargs raises its own error types
        raise _dargs_error(exc, where) from None
    for _ in range(len(d) + 100):  # one undefined key per round
        try:
            arg.check_value(d, strict=True)
            return d
        except Exception as exc:
            m = re.search(r"undefined key `([^`]+)`", str(exc))
            sub = [part for part in str(getattr(exc, "path", "") or "").split("/") if part]
            node: Any = d
            for part in sub:
                node = node.get(part) if isinstance(node, dict) else None
            if m is None or not isinstance(node, dict) or m.group(1) not in node:
                raise _dargs_error(exc, where) from None
            key, at = m.group(1), ".".join([where, *sub, m.group(1)])
            close = difflib.get_close_matches(key, sorted(_names(arg)), n=1, cutoff=0.8)
            if close:  # a typo of a real key: ignoring it would silently change the run
                raise UserError(f"unknown key '{key}'", at, f"did you mean '{close[0]}'?") from None
            node.pop(key)
            LOG.warning("%s is not a dpdispatcher key (dpdispatcher ignores it); ignored", at)
    raise _dargs_error(RuntimeError("too many undefined keys"), where)


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
    return _check_dargs(Machine.arginfo(), {**d, "local_root": "./"}, where)


def _resources(value: Any, where: str, batch_type: str) -> dict[str, Any]:
    from dpdispatcher import Resources

    d = {k: v for k, v in as_dict(value, where).items() if not k.startswith("_")}
    d.setdefault("number_node", 1)
    d.setdefault("cpu_per_node", 1)
    d.setdefault("gpu_per_node", 0)
    d.setdefault("queue_name", "")
    d.setdefault("group_size", 1)
    d.setdefault("kwargs", {})  # LSF requires it; dpdispatcher fills every batch type's defaults
    d = _check_dargs(Resources.arginfo(detail_kwargs=True), {**d, "batch_type": batch_type}, where)
    for key, least in COUNTS.items():
        v = d.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v < least:
            raise UserError(f"{key} {v}", f"{where}.{key}", f"an integer ≥ {least}")
    return d


# resources that count something: dpdispatcher takes any integer, a job script then asks for
# -2 CPUs or runs tasks in -1 parallel lanes
COUNTS = {"number_node": 0, "cpu_per_node": 0, "gpu_per_node": 0, "group_size": 0, "para_deg": 1}


def _command(value: Any, where: str) -> str:
    text = as_str(value, where)
    if not text.strip():
        raise UserError("an empty command", where, "the program to run, e.g. 'dp', 'lmp', 'xtb'")
    return text


_STAGE_FIELDS = {
    "command": Field(_command, doc="the program to run, e.g. 'dp', 'lmp', 'xtb'"),
    "machine": Field(as_dict, doc="a dpdispatcher machine"),
    "resources": Field(as_dict, doc="dpdispatcher resources"),
    "user_forward_files": Field(list_of(as_str), default=list),
    "user_backward_files": Field(list_of(as_str), default=list),
    "check_interval": Field(positive(as_float), default=None),
    "python": Field(_command, default=None,
                    doc="the Python that imports dpgen_ng where this stage's jobs run (relaxations and "
                        "MD driven by ASE); default: dpgen's own Python on the local Shell batch, "
                        "else python3"),
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
    python = d["python"] or (sys.executable if runs_here(machine) else "python3")
    return StageMachine(stage, d["command"], machine, resources, tuple(d["user_forward_files"]),
                        tuple(d["user_backward_files"]), interval, python)


def runs_here(machine: dict[str, Any]) -> bool:
    """Whether jobs run on this machine, with dpgen's own environment (the local Shell batch)."""
    return machine["batch_type"] == "Shell" and machine["context_type"] in LOCAL_CONTEXT_NAMES


def missing_commands(settings: MachineSettings) -> None:
    """For stages run here, the program each command starts must exist (checked with the shell's
    own ``command -v``, so builtins and functions count), and a ``python`` given must import
    dpgen_ng; else a one-line error naming the key. Remote machines cannot be asked before a job
    runs there: docs/cluster.md says what to set."""
    for name, st in settings.stages.items():
        if not runs_here(st.machine):
            continue
        try:
            words = [w for w in shlex.split(st.command) if "=" not in w.split("/")[0]]
        except ValueError:
            continue  # unbalanced quotes: the shell will say so
        if not words:
            continue
        found = subprocess.run(["bash", "-c", 'command -v -- "$1"', "_", words[0]], capture_output=True)
        if found.returncode != 0:
            raise UserError(f"{words[0]!r} is not found on PATH", f"{name}.command",
                            "a program on PATH or its full path (run from the venv, or activate it)")
        if st.python == sys.executable:
            continue  # the Python running this check
        probe = subprocess.run(["bash", "-c", '"$1" -c "import dpgen_ng.ase_driver"', "_", st.python],
                               capture_output=True)
        if probe.returncode != 0:
            raise UserError(f"{st.python} cannot import dpgen_ng", f"{name}.python",
                            "the Python of the venv that has dpgen_ng (or leave it out)")


@dataclass(frozen=True)
class MachineSettings:
    stages: dict[str, StageMachine]

    def __getitem__(self, stage: str) -> StageMachine:
        return self.stages[stage]

    def as_json(self) -> dict[str, Any]:
        return {name: s.as_json() for name, s in self.stages.items()}


def parse_machine(raw: dict[str, Any], required: tuple[str, ...] = STAGES) -> MachineSettings:
    v0 = [k for k in V0_KEYS if k in raw]
    if "api_version" not in raw and v0:
        raise UserError(f"this is DP-GEN's old v0 machine format (it has '{v0[0]}')", v0[0],
                        "the v1 format: per stage command, machine (batch_type, context_type), resources")
    version = raw.get("api_version", "1.0")  # DP-GEN's default
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
    return load_config(path, lambda raw: parse_machine(raw, required), one_line=False)
