"""The ``dpgen`` command: run, check, status, report, rollback, init_bulk, init_surf, test (alias
autotest), simplify, collect."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dpgen_ng import __version__
from dpgen_ng.config.kinds import expect_kind
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.interrupt import Interrupted, signals_raise
from dpgen_ng.io import read_config_file
from dpgen_ng.log import quiet_dpdispatcher, setup_logging

WORKDIR = click.option("-w", "--workdir", type=click.Path(file_okay=False, path_type=Path),
                       default=Path("."), show_default=True,
                       help="Work directory (relative paths in PARAM are taken from here).")
VERBOSE = click.option("-v", "--verbose", is_flag=True, help="Debug output on the console.")


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """User mistakes → one line on stderr, exit 2. A stage that cannot complete → exit 1.
    SIGINT / SIGTERM → one line saying where it stopped, exit 130 / 143."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_raise():
                return func(*args, **kwargs)
        except Interrupted as exc:
            click.echo(exc.line(), err=True)
            sys.exit(exc.exit_code)
        except UserError as exc:
            click.echo(f"error: {exc.line()}", err=True)
            sys.exit(2)
        except StageError as exc:
            click.echo(f"error: {exc}", err=True)
            click.echo("state is kept: fix the cause and run the same command again to resume.", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dpgen (dpgen_ng)")
def main() -> None:
    """dpgen_ng: concurrent learning of DeePMD potentials (DP-GEN compatible inputs)."""
    # the engines installed beside dpgen (dp, lmp in the venv) are found by the jobs it starts
    # here, also when .venv/bin/dpgen is called by its path from a cron job or a batch script
    own_bin = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if own_bin not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([own_bin, path]) if path else own_bin


@main.command("run")
@click.argument("param", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine", type=click.Path(dir_okay=False, path_type=Path))
@WORKDIR
@VERBOSE
@handle_errors
def run_cmd(param: Path, machine: Path, workdir: Path, verbose: bool) -> None:
    """Run (or resume) the train → explore → label loop of PARAM on MACHINE.

    Progress is appended to record.dpgen in the work dir; running the same command again
    continues where it stopped, without redoing finished tasks.
    """
    from dpgen_ng.config.machine import load_machine, missing_commands
    from dpgen_ng.config.param import load_run_params
    from dpgen_ng.loop import run_loop
    from dpgen_ng.record import read_record
    from dpgen_ng.stages.train import preflight
    from dpgen_ng.status import collect_status, format_status

    quiet_dpdispatcher()
    expect_kind(read_config_file(param), "run", param)
    params = load_run_params(param)
    machines = load_machine(machine)
    missing_commands(machines)
    if read_record(workdir) == (0, -1) and not (workdir / "iter.000000" / "00.train" / "tasks.json").exists():
        preflight(workdir, params, lambda: click.echo(
            "checking the descriptor's sel against DeePMD-kit's neighbour statistics ...", err=True))
    setup_logging(workdir, verbose)
    stop = run_loop(workdir, params, machines)
    click.echo(format_status(collect_status(workdir)))
    if stop.exit_code:
        sys.exit(stop.exit_code)


@main.command("check")
@click.argument("param", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine", type=click.Path(dir_okay=False, path_type=Path), required=False)
@WORKDIR
@handle_errors
def check_cmd(param: Path, machine: Path | None, workdir: Path) -> None:
    """Validate PARAM (any DP-GEN param file) and MACHINE; print the
    effective settings as JSON. Writes nothing. Says which kind of DP-GEN param it read PARAM as
    (run, init_bulk, init_surf, simplify, test; a kind dpgen_ng does not read, e.g. init_reaction,
    is refused in one line)."""
    from dpgen_ng.config.autotest import load_test_params
    from dpgen_ng.config.init import load_init_params
    from dpgen_ng.config.machine import STAGES, load_machine, missing_commands
    from dpgen_ng.config.param import load_run_params

    quiet_dpdispatcher()
    kind = expect_kind(read_config_file(param), "", param)
    stages: tuple[str, ...] = STAGES
    if kind.command == "init_bulk":
        settings, stages = load_init_params(param, workdir).effective(), ("fp",)
    elif kind.command == "init_surf":
        from dpgen_ng.config.initsurf import load_initsurf_params

        settings, stages = load_initsurf_params(param, workdir).effective(), ("fp",)
    elif kind.command == "simplify":
        from dpgen_ng.simplify import load_simplify_params, machine_stages

        simplify = load_simplify_params(param, workdir)
        settings, stages = simplify.effective(), machine_stages(simplify)
    elif kind.command == "test":
        test = load_test_params(param, workdir)
        settings, stages = test.effective(), tuple(sorted({i.stage for i in test.interactions}))
    else:
        from dpgen_ng.stages.train import read_inputs

        params = load_run_params(param)
        read_inputs(workdir, params)  # the data and configurations `dpgen run` will read
        settings = params.effective()
    out: dict[str, Any] = {"param": settings}
    if machine is not None:
        machines = load_machine(machine, stages)
        missing_commands(machines)
        out["machine"] = machines.as_json()
    click.echo(json.dumps(out, indent=2, default=str))
    click.echo(f"ok: {param} (read as a DP-GEN {kind.name} param, for dpgen {kind.command})"
               + (f" and {machine}" if machine else "") + " are valid", err=True)


@main.command("status")
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--plot", is_flag=True, help="Also write the report's figures (as `dpgen report`).")
@handle_errors
def status_cmd(workdir: Path, as_json: bool, plot: bool) -> None:
    """Per iteration: step reached, accurate / candidate / failed counts per system, labels
    added, and why the run stopped."""
    from dpgen_ng.status import collect_status, format_status

    if not (workdir / "record.dpgen").exists() and not (workdir / ".dpgen").exists():
        raise UserError("no dpgen run here (no record.dpgen)", str(workdir), "a work dir of `dpgen run`")
    status = collect_status(workdir)
    click.echo(json.dumps(status, indent=2) if as_json else format_status(status))
    if plot:
        _report(workdir, None)


@main.command("report")
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
                required=False)
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the PNGs and report.html go (default: WORKDIR/report).")
@handle_errors
def report_cmd(workdir: Path, out: Path | None) -> None:
    """PNG figures of a run (deviation histograms with the trust levels, accurate / candidate /
    failed ratios, labels, learning curves, validation, calibration, time per stage) and one
    report.html that shows them, offline."""
    _report(workdir, out)


def _report(workdir: Path, out: Path | None) -> None:
    from dpgen_ng.report import write_report

    if not (workdir / "record.dpgen").exists():
        raise UserError("no dpgen run here (no record.dpgen)", str(workdir), "a work dir of `dpgen run`")
    click.echo(f"report: {write_report(workdir, out)}")


@main.command("rollback")
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("target", metavar="ITER[:STEP]")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@handle_errors
def rollback_cmd(workdir: Path, target: str, dry_run: bool) -> None:
    """Make `dpgen run` continue at ITER[:STEP] (step 0-8 or a name such as run_fp; default 0), as
    if the later steps had never finished. What they made is moved to .dpgen/rollback/NNN, not
    deleted; finished tasks whose inputs do not change are taken back from there, not run again."""
    from dpgen_ng.ledger import Ledger
    from dpgen_ng.loop import WorkdirLock
    from dpgen_ng.rollback import apply, make_plan, parse_target

    plan = make_plan(workdir, parse_target(target))
    if not dry_run:
        with WorkdirLock(workdir), Ledger(workdir) as ledger:
            apply(plan, ledger)
    for line in plan.lines(dry_run):
        click.echo(line)


@main.command("init_bulk")
@click.argument("param", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine", type=click.Path(dir_okay=False, path_type=Path), required=False)
@WORKDIR
@VERBOSE
@handle_errors
def init_bulk_cmd(param: Path, machine: Path | None, workdir: Path, verbose: bool) -> None:
    """Initial training data from a POSCAR: supercell, scale, perturb, label, collect.

    Without MACHINE the inputs are prepared but nothing is run (as in DP-GEN).
    """
    from dpgen_ng.config.init import load_init_params
    from dpgen_ng.config.machine import load_machine, missing_commands
    from dpgen_ng.initbulk.bulk import init_bulk

    quiet_dpdispatcher()
    expect_kind(read_config_file(param), "init_bulk", param)
    params = load_init_params(param, workdir)
    machines = load_machine(machine, required=("fp",)) if machine else None
    if machines is not None:
        missing_commands(machines)
    setup_logging(workdir, verbose)
    report = init_bulk(params, workdir, machines)
    click.echo(json.dumps(report, indent=2))


@main.command("init_surf")
@click.argument("param", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine", type=click.Path(dir_okay=False, path_type=Path), required=False)
@WORKDIR
@VERBOSE
@handle_errors
def init_surf_cmd(param: Path, machine: Path | None, workdir: Path, verbose: bool) -> None:
    """Slabs from a bulk cell (Miller indices, layers, vacuum), relaxed, scaled, elongated along z
    and perturbed, in DP-GEN's layout: configurations for a run's sys_configs.

    Without MACHINE nothing is relaxed (the structures are built as placed).
    """
    from dpgen_ng.config.initsurf import load_initsurf_params
    from dpgen_ng.config.machine import load_machine, missing_commands
    from dpgen_ng.initsurf.surf import init_surf

    quiet_dpdispatcher()
    expect_kind(read_config_file(param), "init_surf", param)
    params = load_initsurf_params(param, workdir)
    machines = load_machine(machine, required=("fp",)) if machine else None
    if machines is not None:
        missing_commands(machines)
    setup_logging(workdir, verbose)
    click.echo(json.dumps(init_surf(params, workdir, machines), indent=2))


@main.command("simplify")
@click.argument("param", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("machine", type=click.Path(dir_okay=False, path_type=Path))
@WORKDIR
@VERBOSE
@handle_errors
def simplify_cmd(param: Path, machine: Path, workdir: Path, verbose: bool) -> None:
    """Prune a data set (DP-GEN's simplify): train a committee on a picked subset, pick the frames
    it predicts worst from the rest, repeat. Resumes like `dpgen run`; the result is
    WORKDIR/data.simplified (see docs/simplify.md)."""
    from dpgen_ng.config.machine import load_machine, missing_commands
    from dpgen_ng.simplify import load_simplify_params, machine_stages, run_simplify

    quiet_dpdispatcher()
    expect_kind(read_config_file(param), "simplify", param)
    params = load_simplify_params(param, workdir)
    machines = load_machine(machine, machine_stages(params))
    missing_commands(machines)
    setup_logging(workdir, verbose)
    code = run_simplify(params, workdir, machines)
    if code:
        sys.exit(code)


@main.command("collect")
@click.argument("job_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("output", type=click.Path(path_type=Path))
@click.option("-p", "--parameter", "param", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("param.json"), show_default=True,
              help="The run's param file (for its init_data_sys), relative to JOB_DIR.")
@click.option("-v", "--verbose", is_flag=True, help="One line per system: formula, atoms, frames.")
@click.option("-m", "--merge", is_flag=True, help="Merge the systems with the same chemical formula.")
@click.option("-s", "--shuffle", is_flag=True, help="Shuffle each iteration set (seeded: --seed).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of --shuffle.")
@click.option("--hdf5", is_flag=True, help="Write one HDF5 file (deepmd/hdf5) instead of directories.")
@handle_errors
def collect_cmd(job_dir: Path, output: Path, param: Path, verbose: bool, merge: bool, shuffle: bool,
                seed: int, hdf5: bool) -> None:
    """Gather the initial data and every iteration's labels of the run in JOB_DIR into OUTPUT
    (deepmd/npy: init.III and sys.KEY, as DP-GEN's collect). OUTPUT must be new."""
    from dpgen_ng.collect import collect

    sets = collect(job_dir, output, param, merge=merge, shuffle=shuffle, hdf5=hdf5, seed=seed)
    if verbose:
        for s in sets:
            click.echo(f"{s.name:>24} {s.system.formula:>16} natoms {s.system.get_natoms():6d} "
                       f"nframes {s.system.get_nframes():6d}  ({s.source})")
    total = sum(s.system.get_nframes() for s in sets)
    click.echo(f"collected {total} frames in {len(sets)} systems into {output}", err=True)


TEST_STEPS = ("make", "run", "post")


def run_test(step: str, param: Path, machine: Path | None, workdir: Path, verbose: bool) -> int:
    """make / run / post (or all three) of a test param; returns the exit code."""
    from dpgen_ng.autotest.report import compare, eos_png, table
    from dpgen_ng.autotest.run import TestRun
    from dpgen_ng.config.autotest import load_test_params
    from dpgen_ng.config.machine import load_machine, missing_commands
    from dpgen_ng.io import atomic_write_json
    from dpgen_ng.loop import WorkdirLock

    quiet_dpdispatcher()
    expect_kind(read_config_file(param), "test", param)
    params = load_test_params(param, workdir)
    stages = tuple(sorted({i.stage for i in params.interactions}))
    machines = load_machine(machine, required=stages) if machine else None
    if machines is not None:
        missing_commands(machines)
    if machines is None and step in ("run", "all"):
        raise UserError("no MACHINE given", f"dpgen test {'' if step == 'all' else 'run '}{param}",
                        "a machine.json with the " + " and ".join(stages) + " section(s)")
    setup_logging(workdir, verbose)
    with WorkdirLock(workdir, "test"):
        test = TestRun(params, workdir, machines)
        if step == "make":
            test.make()
            click.echo(f"made the tasks of {len(params.structures)} structure(s); next: dpgen test run")
            return 0
        if step in ("run", "all"):
            test.run()
        if step == "run":
            return 0
        reports = test.post()
    out, failed = [], False
    for rep in reports:
        rows = compare(rep, params)
        failed |= any(r.get("problem") for r in rows)
        png = eos_png(rep, params, workdir.resolve() / rep.conf / "eos_00" / "eos.png")
        click.echo(table(rep, rows, params))
        if png:
            click.echo(f"EOS plot: {png}")
        click.echo("")
        out.append({"conf": rep.conf, "rows": rows, "results": rep.results, "problems": rep.problems,
                    "notes": rep.notes})
    atomic_write_json(workdir / "test_report.json",
                      {"interactions": [i.as_json() for i in params.interactions], "structures": out})
    return 1 if failed else 0


def _test_command(name: str, doc: str) -> click.Command:
    @click.command(name, help=doc)
    @click.argument("args", nargs=-1, metavar="[make|run|post] PARAM [MACHINE]")
    @WORKDIR
    @VERBOSE
    @handle_errors
    def cmd(args: tuple[str, ...], workdir: Path, verbose: bool) -> None:
        step = "all"
        if args and args[0] in TEST_STEPS:
            step, args = args[0], args[1:]
        if not 1 <= len(args) <= 2:
            raise UserError(f"got {len(args)} file argument(s)", f"dpgen {name}",
                            "[make|run|post] PARAM [MACHINE]")
        param = Path(args[0])
        machine = Path(args[1]) if len(args) > 1 else None
        sys.exit(run_test(step, param, machine, workdir, verbose))

    return cmd


main.add_command(_test_command("test", """Material properties of the model against a reference.

    PARAM uses DP-GEN autotest's keys (structures, interaction, relaxation, properties) plus
    `reference`. Without a step: make, run and post; `make`, `run`, `post` do one step.
    Tasks run through MACHINE (LAMMPS on model_devi, fp engines on fp) and resume like
    `dpgen run`. Prints one table per structure and writes result.json per property."""))
main.add_command(_test_command("autotest", "DP-GEN's name for `dpgen test`: "
                                           "dpgen autotest make|run|post PARAM [MACHINE]."))


if __name__ == "__main__":
    main()
