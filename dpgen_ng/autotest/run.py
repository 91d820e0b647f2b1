"""``dpgen test`` make / run / post on DP-GEN autotest's layout.

For the model (``interaction``): ``<conf>/relaxation/relax_task/`` and ``<conf>/<type>_00/task.NNNNNN/``;
for the ``reference`` the same under ``<conf>/reference/``. Tasks run through the machine file
(LAMMPS on ``model_devi``, fp engines on ``fp``) with the ledger and rc files of ``dpgen run``.

Stale outputs are never read (DP-GEN users got false results from old OUTCARs): ``make`` keeps
a task directory only when its inputs are byte-identical to what the current param asks for, and
replaces it (outputs gone) otherwise; ``post`` rebuilds every task's inputs from the current
param in a scratch tree, and reads a task's outputs only if its rc file carries the id (hash of
path, command and inputs) of exactly those inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpdata

from dpgen_ng.autotest import defects as _defects  # noqa: F401 - registers the properties
from dpgen_ng.autotest import elastic as _elastic  # noqa: F401
from dpgen_ng.autotest import eos as _eos  # noqa: F401
from dpgen_ng.autotest import surface as _surface  # noqa: F401
from dpgen_ng.autotest.base import Outcome, Property, property_class
from dpgen_ng.config.autotest import CalSetting, InteractionSettings, PropertySpec, TestParams
from dpgen_ng.config.machine import MachineSettings
from dpgen_ng.dispatch import Dispatcher, TaskSpec
from dpgen_ng.dispatch.runner import read_task_rc, task_id
from dpgen_ng.errors import UserError
from dpgen_ng.fp.base import Failure, JobKind, Relaxed, job_result
from dpgen_ng.io import atomic_write_json, atomic_write_text, replace_dir
from dpgen_ng.ledger import Ledger

log = logging.getLogger("dpgen_ng.test")
RELAX_DIR = "relaxation/relax_task"
COMMANDS = ".dpgen/test-commands.json"  # {task path: command it was run with}
RESULT, RESULT_OUT = "result.json", "result.out"


@dataclass(frozen=True)
class Task:
    path: str  # relative to the work dir
    frame: dpdata.System
    job: JobKind
    meta: dict[str, Any] = field(default_factory=dict)

    def spec(self, command: str) -> TaskSpec:
        j = self.job
        return TaskSpec(self.path, j.command(command), j.forward, j.backward, j.outlog, j.errlog)


class Side:
    """One interaction (the model or the reference) and its calculations."""

    def __init__(self, inter: InteractionSettings, workdir: Path, command: str | None,
                 python: str | None = None) -> None:
        self.inter = inter
        self.workdir = workdir
        self.engine = inter.engine()
        self.command = command or ("lmp" if inter.type == "deepmd" else inter.type)
        self.python = python

    @property
    def role(self) -> str:
        return self.inter.role

    def root(self, conf: Path) -> Path:
        return conf if self.role == "model" else conf / "reference"

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.workdir))

    def job(self, cal: CalSetting) -> JobKind:
        jobs = self.engine.jobs({**cal.options(), "command": self.command, "python": self.python})
        return jobs["single" if cal.static else "relax"]

    def relax_task(self, conf: Path, cal: CalSetting) -> Task:
        frame = dpdata.System(str(conf / "POSCAR"), fmt="vasp/poscar", type_map=list(self.inter.type_map))
        return Task(self.rel(self.root(conf) / RELAX_DIR), frame, self.job(cal))

    def prop_tasks(self, conf: Path, spec: PropertySpec, prop: Property, equi: dpdata.System) -> list[Task]:
        base = self.root(conf) / spec.dirname
        job = self.job(spec.cal)
        return [Task(self.rel(base / f"task.{i:06d}"), plan.structure, job, plan.meta)
                for i, plan in enumerate(prop.plans(equi))]

    def outcome(self, task: Task) -> Outcome | Failure:
        diagnose = getattr(self.engine, "diagnose", lambda d: None)
        res = job_result(self.workdir / task.path, task.job, diagnose)
        if isinstance(res, Failure):
            return res
        if isinstance(res, Relaxed):
            if res.final is None:
                return Failure("unconverged", "no converged energy of the relaxed structure in the output")
            return Outcome.from_labels(res.final, res.converged, res.structure)
        return Outcome.from_labels(res)


def _same_inputs(a: Path, b: Path, names: tuple[str, ...]) -> bool:
    for name in names:
        pa, pb = a / name, b / name
        if pa.exists() != pb.exists() or (pa.exists() and pa.read_bytes() != pb.read_bytes()):
            return False
    return True


def write_task(workdir: Path, task: Task) -> bool:
    """Write the task's inputs; keep an existing directory (and its outputs) only when its inputs
    are identical. Returns True when the directory was (re)made."""

    def fill(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        task.job.write(task.frame, tmp)

    same = lambda old, new: _same_inputs(old, new, task.job.forward)
    return replace_dir(workdir / task.path, fill, keep=same)


def _drop_results(group: Path) -> None:
    for name in (RESULT, RESULT_OUT):
        (group / name).unlink(missing_ok=True)


def write_group(workdir: Path, group: Path, tasks: list[Task], extra: dict[str, Any]) -> None:
    """Write a property's tasks; remove task dirs an earlier make left that are not asked for now."""
    group.mkdir(parents=True, exist_ok=True)
    remade = [write_task(workdir, t) for t in tasks]
    wanted = {Path(t.path).name for t in tasks}
    for old in group.glob("task.*"):
        if old.name not in wanted:
            shutil.rmtree(old)
            remade.append(True)
    if any(remade):
        _drop_results(group)
    atomic_write_json(group / "tasks.json", {**extra, "tasks": [{"path": t.path, **t.meta} for t in tasks]})


@dataclass
class ConfReport:
    conf: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> {prop: result}
    problems: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> {prop: why not}
    notes: dict[str, dict[str, str]] = field(default_factory=dict)  # role -> {prop: caveat}


class TestRun:
    """make / run / post of one test param."""

    def __init__(self, params: TestParams, workdir: Path, machines: MachineSettings | None) -> None:
        self.params = params
        self.workdir = Path(workdir).resolve()
        self.machines = machines
        self.sides = [Side(i, self.workdir, machines[i.stage].command if machines else None,
                           machines[i.stage].python if machines else None)
                      for i in params.interactions]
        self.props = {p.type: property_class(p.type)(p.params, params.interactions[0].type_map)
                      for p in params.properties}
        self._commands: dict[str, str] | None = None

    # ----- the relaxed structures ---------------------------------------------------------
    def _equi(self, side: Side, conf: Path, spec: PropertySpec | None = None) -> dpdata.System | None:
        """The start structure of the properties: the relaxation's result (or start_confs_path)."""
        if spec is not None and spec.start_confs_path is not None:
            path = spec.start_confs_path / conf.name / RELAX_DIR / "CONTCAR"
            if not path.is_file():
                raise UserError(f"{path} not found", "start_confs_path",
                                "<start_confs_path>/<conf name>/relaxation/relax_task/CONTCAR")
            return dpdata.System(str(path), fmt="vasp/poscar", type_map=list(side.inter.type_map))
        out = self.checked(side, side.relax_task(conf, self.params.relaxation))
        return out.structure if isinstance(out, Outcome) else None

    # ----- make ---------------------------------------------------------------------------
    def make_relax(self, side: Side) -> list[Task]:
        tasks = [side.relax_task(conf, self.params.relaxation) for conf in self.params.structures]
        for t in tasks:
            write_task(self.workdir, t)
        return tasks

    def make_props(self, side: Side) -> list[Task]:
        """Property tasks of every conf whose relaxed structure is known."""
        out = []
        for conf in self.params.structures:
            relaxed = self._equi(side, conf)  # once per structure (it hashes the relaxation's inputs)
            for spec in self.params.properties:
                if spec.skip:
                    continue
                equi = self._equi(side, conf, spec) if spec.start_confs_path else relaxed
                if equi is None:
                    log.info("%s: %s is made once the relaxation has run", side.rel(side.root(conf)),
                             spec.type)
                    continue
                tasks = side.prop_tasks(conf, spec, self.props[spec.type], equi)
                write_group(self.workdir, side.root(conf) / spec.dirname, tasks,
                            {"type": spec.type, "interaction": side.inter.as_json()})
                out += tasks
        return out

    def make(self) -> None:
        for side in self.sides:
            self.make_relax(side)
            self.make_props(side)

    # ----- run ----------------------------------------------------------------------------
    def _dispatch(self, side: Side, phase: str, tasks: list[Task], ledger: Ledger) -> None:
        if not tasks:
            return
        assert self.machines is not None
        commands = self.commands()
        for t in tasks:
            commands[t.path] = side.command
        atomic_write_json(self.workdir / COMMANDS, commands)
        specs = [t.spec(side.command) for t in tasks]
        Dispatcher(self.workdir, self.machines[side.inter.stage], ledger).run(
            0, f"test-{phase}-{side.role}", self.workdir, specs, allow_failures=True)

    def run(self) -> None:
        if self.machines is None:
            raise UserError("no MACHINE given", "dpgen test run", "PARAM MACHINE")
        with Ledger(self.workdir) as ledger:
            for side in self.sides:
                self._dispatch(side, "relax", self.make_relax(side), ledger)
            for side in self.sides:
                self._dispatch(side, "props", self.make_props(side), ledger)

    # ----- post ---------------------------------------------------------------------------
    def commands(self) -> dict[str, str]:
        if self._commands is None:
            path = self.workdir / COMMANDS
            self._commands = json.loads(path.read_text()) if path.is_file() else {}
        return self._commands

    def checked(self, side: Side, task: Task) -> Outcome | Failure:
        """The task's outcome, if its outputs belong to exactly the inputs the param asks for."""
        command = self.commands().get(task.path)
        info = read_task_rc(self.workdir / task.path)
        if command is None:
            return Failure("missing_output", "not run yet")
        if info is None:
            return Failure("crashed", "no dpgen_task.rc: the job was lost, or is still running")
        with tempfile.TemporaryDirectory(dir=self.workdir / ".dpgen") as scratch:
            (Path(scratch) / task.path).mkdir(parents=True)
            task.job.write(task.frame, Path(scratch) / task.path)
            expected = task_id(Path(scratch), task.spec(command))
        if info.task_id != expected:
            return Failure("missing_output", "stale: the outputs were made from other inputs than this "
                                             "param asks for (run `dpgen test run` again)")
        if task_id(self.workdir, task.spec(command)) != expected:
            return Failure("missing_output", "stale: the inputs in the task dir were changed after it ran "
                                             "(run `dpgen test run` again)")
        return side.outcome(task)

    def post(self) -> list[ConfReport]:
        (self.workdir / ".dpgen").mkdir(exist_ok=True)
        reports = []
        for conf in self.params.structures:
            rep = ConfReport(str(conf.relative_to(self.workdir)))
            for side in self.sides:
                rep.results[side.role], rep.problems[side.role], rep.notes[side.role] = \
                    self._post_conf(side, conf)
            reports.append(rep)
        return reports

    def _post_conf(self, side: Side, conf: Path) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
        results: dict[str, Any] = {}
        problems: dict[str, str] = {}
        notes: dict[str, str] = {}
        relax = side.relax_task(conf, self.params.relaxation)
        equi = self.checked(side, relax)
        if isinstance(equi, Failure):
            problems["relaxation"] = f"{equi.kind}: {equi.detail}"
            for spec in self.params.properties:  # an old result must not pass for a current one
                _drop_results(side.root(conf) / spec.dirname)
            return results, problems, notes
        relax_dir = self.workdir / relax.path
        results["relaxation"] = {"energy": equi.energy, "natoms": equi.natoms, "energy_per_atom": equi.epa,
                                 "volume_per_atom": equi.volume / equi.natoms,
                                 "cell": equi.structure["cells"][0].tolist(),
                                 "stress_gpa": None if equi.stress is None else equi.stress.tolist(),
                                 "converged": equi.converged}
        atomic_write_json(relax_dir / RESULT, results["relaxation"])
        if not (relax_dir / "CONTCAR").is_file():
            equi.structure.to("vasp/poscar", str(relax_dir / "CONTCAR"))
        if not equi.converged:
            log.warning("%s: the relaxation stopped before converging", relax.path)
            notes["relaxation"] = "not converged (stopped at maxiter)"
        for spec in self.params.properties:
            if spec.skip:
                continue
            start = self._equi(side, conf, spec) if spec.start_confs_path else equi.structure
            prop = self.props[spec.type]
            tasks = side.prop_tasks(conf, spec, prop, start)
            outcomes = [self.checked(side, t) for t in tasks]
            failed = [(t, o) for t, o in zip(tasks, outcomes) if isinstance(o, Failure)]
            group = self.workdir / side.rel(side.root(conf) / spec.dirname)
            if failed:
                _drop_results(group)
                t, o = failed[0]
                problems[spec.type] = (f"{len(failed)} of {len(tasks)} task(s) without a result; "
                                       f"{Path(t.path).name}: {o.kind}: {o.detail}")
                continue
            try:
                result = prop.compute([t.meta for t in tasks], outcomes, equi)
            except ValueError as exc:
                _drop_results(group)
                problems[spec.type] = str(exc)
                continue
            stopped = sum(1 for o in outcomes if isinstance(o, Outcome) and not o.converged)
            if stopped:
                notes[spec.type] = f"{stopped} of {len(tasks)} relaxation(s) stopped at maxiter"
            atomic_write_json(group / RESULT, result)
            atomic_write_text(group / RESULT_OUT, f"conf_dir: {conf}\n" + prop.text(result))
            results[spec.type] = result
        return results, problems, notes
