"""Bad input, one row per case: every row must give exit code 2, exactly one line on stderr that
starts with ``error:`` and names the key or file, no traceback, and leave the work dir exactly as
it was (names, sizes and hashes of every file). ``check`` for most rows; the real ``run``,
``init_bulk`` and ``test`` for the rows about what those commands would write."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, fake_deepmd, load_example, write_json

CU = EXAMPLE.parent / "cu"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A work dir where `dpgen check param.json machine.json` (DP-GEN vocabulary, xtb) passes: the
    structures from `dpgen init_bulk init.json` (no machine: nothing runs) and made-up initial
    data; and Cu's test.json with its structure and a stand-in model file."""
    w = tmp_path_factory.mktemp("base")
    shutil.copy(EXAMPLE / "CH4.POSCAR", w)
    write_json(w / "init.json", load_example("init.json"))
    write_json(w / "param.json", load_example("param-dpgen.json"))
    write_json(w / "machine.json", load_example("machine.json"))
    out = dpgen(w, "init_bulk", "init.json")
    assert out.returncode == 0, out.stderr
    fake_deepmd(w / "CH4.POSCAR.01x01x01" / "02.md" / "sys-0004-0001" / "deepmd")
    shutil.copytree(CU / "confs", w / "confs")
    test = json.loads((CU / "test.json").read_text())
    test["interaction"]["model"] = "model.pb"
    write_json(w / "test.json", test)
    (w / "model.pb").write_bytes(b"stand-in")
    ok = dpgen(w, "check", "param.json", "machine.json")
    assert ok.returncode == 0, ok.stderr
    return w


def dpgen(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpgen_ng.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def listing(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = f"{p.stat().st_size} {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}"
        else:
            out[rel] = "dir"
    return out


def edit(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(w: Path) -> None:
        d = json.loads((w / name).read_text())
        change(d)
        write_json(w / name, d)
    return apply


def job(**kw) -> Callable[[dict], None]:
    return lambda p: p["model_devi_jobs"][0].update(kw)


def fp_machine(**kw) -> Callable[[dict], None]:
    return lambda m: m["fp"]["resources"].update(kw)


def raw(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda w: (w / name).write_bytes(data)


def symlink_loop(w: Path) -> None:
    (w / "loop").symlink_to("loop")
    edit("param.json", lambda p: p.update(init_data_sys=["loop"]))(w)


def unreadable_conf(w: Path) -> None:
    (w / "garbage").mkdir()
    (w / "garbage" / "POSCAR").write_text("this is not\na POSCAR\n")
    edit("param.json", lambda p: p.update(sys_configs=[["garbage/POSCAR"]]))(w)


def cp2k(p: dict) -> dict:
    p.pop("fp_params")
    p.update(fp_style="cp2k", user_fp_params={
        "GLOBAL": {"PROJECT": "DPGEN"},
        "FORCE_EVAL": {"DFT": {"BASIS_SET_FILE_NAME": "BASIS_MOLOPT",
                               "POTENTIAL_FILE_NAME": "GTH_POTENTIALS"},
                       "SUBSYS": {"KIND": {"_": ["C", "H"], "POTENTIAL": ["GTH-PBE-q4", "GTH-PBE-q1"],
                                           "BASIS_SET": ["DZVP-MOLOPT-GTH", "DZVP-MOLOPT-GTH"]}}}})
    return p


def dpa3(p: dict) -> None:
    """The PyTorch example's DPA-3 descriptor, left with the base's TensorFlow backend."""
    example = json.loads((EXAMPLE / "param-pytorch-dpa3.json").read_text())
    model = example["default_training_param"]["model"]
    p["default_training_param"]["model"]["descriptor"] = model["descriptor"]


def pytorch(**kw) -> Callable[[dict], None]:
    return lambda p: p.update(train_backend="pytorch", **kw)


def cp2k_project(p: dict) -> None:
    cp2k(p)["user_fp_params"]["GLOBAL"]["PROJECT"] = "DPGEN\n@INCLUDE /etc/passwd"


def cp2k_kind(p: dict) -> None:
    cp2k(p)["user_fp_params"]["FORCE_EVAL"]["SUBSYS"]["KIND"]["_"][0] = "C\n&END"


def test_the_cp2k_variant_of_the_base_passes(base, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(base, w, symlinks=True)
    edit("param.json", cp2k)(w)
    out = dpgen(w, "check", "param.json")
    assert out.returncode == 0, out.stderr


def test_comments_may_span_lines(base, tmp_path):
    w = tmp_path / "w"
    shutil.copytree(base, w, symlinks=True)
    edit("param.json", lambda p: p.update(_comment="first line\nsecond line"))(w)
    assert dpgen(w, "check", "param.json").returncode == 0


@dataclass(frozen=True)
class Case:
    name: str
    prepare: Callable[[Path], None]
    args: tuple[str, ...]
    says: str  # a fragment of the one error line: the key or file it names

    def __str__(self) -> str:
        return self.name


CHECK = ("check", "param.json", "machine.json")
RUN = ("run", "param.json", "machine.json")
INIT = ("init_bulk", "init.json", "machine.json")
TEST = ("test", "test.json")

CASES = [
    # syntax and encoding
    Case("random bytes", raw("param.json", bytes(range(256)) * 4), CHECK, "not UTF-8 text"),
    Case("deep JSON", raw("param.json", b"[" * 100_000 + b"]" * 100_000), CHECK, "nested too deeply"),
    Case("deep YAML", lambda w: (w / "param.yaml").write_text("[" * 100_000 + "]" * 100_000),
         ("check", "param.yaml"), "nested too deeply"),
    Case("invalid JSON", raw("param.json", b'{"type_map": ["H", "C"],}'), CHECK, "invalid JSON"),
    Case("not a mapping", raw("param.json", b"[1, 2]"), CHECK, "top level is not a mapping"),
    Case("empty file", raw("param.json", b""), CHECK, "invalid JSON"),
    Case("machine of random bytes", raw("machine.json", bytes(range(128, 256))), CHECK, "machine.json"),
    # types and ranges
    Case("fp_task_max text", edit("param.json", lambda p: p.update(fp_task_max="ten")), CHECK, "fp_task_max"),
    Case("numb_models 0", edit("param.json", lambda p: p.update(numb_models=0)), CHECK, "numb_models"),
    Case("model_devi_dt < 0", edit("param.json", lambda p: p.update(model_devi_dt=-0.001)), CHECK,
         "model_devi_dt"),
    Case("job dt 0", edit("param.json", job(dt=0)), CHECK, "model_devi_jobs[0].dt"),
    Case("job dt < 0", edit("param.json", job(dt=-0.5)), CHECK, "model_devi_jobs[0].dt"),
    Case("nsteps beyond LAMMPS", edit("param.json", job(nsteps=2**31)), CHECK, "model_devi_jobs[0].nsteps"),
    Case("nsteps 0", edit("param.json", job(nsteps=0)), CHECK, "model_devi_jobs[0].nsteps"),
    Case("grown nsteps beyond LAMMPS", edit("param.json", job(nsteps=10**9, max_iter=3, grow_nsteps={
        "factor": 2, "max_factor": 4})), CHECK, "model_devi_jobs[0].grow_nsteps.max_factor"),
    Case("trj_freq 0", edit("param.json", job(trj_freq=0)), CHECK, "model_devi_jobs[0].trj_freq"),
    Case("no temperatures", edit("param.json", job(temps=[])), CHECK, "model_devi_jobs[0].temps"),
    Case("unknown ensemble", edit("param.json", job(ensemble="nvx")), CHECK, "model_devi_jobs[0].ensemble"),
    Case("misspelt key", edit("param.json", lambda p: p.update(fp_task_maxx=5)), CHECK, "fp_task_maxx"),
    # cross-key consistency
    Case("trust list longer than systems", edit("param.json", lambda p: p.update(
        model_devi_f_trust_lo=[0.05, 0.06], model_devi_f_trust_hi=[0.2, 0.3])), CHECK,
         "model_devi_f_trust_lo"),
    Case("trust dict of a system that does not exist", edit("param.json", lambda p: p.update(
        model_devi_f_trust_lo={"0": 0.05, "3": 0.06})), CHECK, "model_devi_f_trust_lo"),
    Case("trust dict key not an index", edit("param.json", lambda p: p.update(
        model_devi_f_trust_hi={"zero": 0.3})), CHECK, "model_devi_f_trust_hi"),
    Case("job trust list longer than systems", edit("param.json", job(model_devi_f_trust_lo=[0.05, 0.06])),
         CHECK, "model_devi_jobs[0].model_devi_f_trust_lo"),
    Case("trust lo above hi", edit("param.json", lambda p: p.update(model_devi_f_trust_lo=0.5)), CHECK,
         "model_devi_f_trust_lo"),
    Case("sys_idx out of range", edit("param.json", job(sys_idx=[1])), CHECK, "model_devi_jobs[0].sys_idx"),
    Case("soft threshold above hard", edit("param.json", lambda p: p.update(
        fp_accurate_soft_threshold=1.0, fp_accurate_threshold=0.5)), CHECK, "fp_accurate_soft_threshold"),
    Case("repeated type", edit("param.json", lambda p: p.update(type_map=["H", "H"])), CHECK, "type_map"),
    # paths
    Case("init_data_sys at nothing", edit("param.json", lambda p: p.update(init_data_sys=["nothing/here"])),
         CHECK, "init_data_sys[0]"),
    Case("init_data_sys outside", edit("param.json", lambda p: p.update(init_data_sys=["../../../../etc"])),
         CHECK, "init_data_sys[0]"),
    Case("init_data_sys symlink loop", symlink_loop, CHECK, "init_data_sys[0]"),
    Case("sys_configs match nothing", edit("param.json", lambda p: p.update(sys_configs=[["no/*/POSCAR"]])),
         CHECK, "sys_configs[0]"),
    Case("sys_configs unreadable", unreadable_conf, CHECK, "sys_format"),
    # machine sections
    Case("cpu_per_node -2", edit("machine.json", fp_machine(cpu_per_node=-2)), CHECK,
         "fp.resources.cpu_per_node"),
    Case("para_deg -1", edit("machine.json", fp_machine(para_deg=-1)), CHECK, "fp.resources.para_deg"),
    Case("empty command", edit("machine.json", lambda m: m["train"].update(command=" ")), CHECK,
         "train.command"),
    Case("command not on PATH", edit("machine.json", lambda m: m["fp"].update(command="xtb-nope --gfn 2")),
         CHECK, "fp.command"),
    Case("fp python without dpgen_ng",
         edit("machine.json", lambda m: m["fp"].update(python="/usr/bin/python3")), CHECK, "fp.python"),
    Case("v0 machine (deepmd_path, no api_version)",
         edit("machine.json", lambda m: (m.pop("api_version"), m.update(deepmd_path="/opt/deepmd"))), CHECK,
         "deepmd_path"),
    Case("unknown batch_type", edit("machine.json", lambda m: m["fp"]["machine"].update(batch_type="Nope")),
         CHECK, "fp.machine.batch_type"),
    # backends and training from earlier models
    Case("DPA-3 with TensorFlow", edit("param.json", dpa3), CHECK,
         "default_training_param.model.descriptor.type"),
    Case("descriptor not a mapping", edit("param.json", lambda p: p["default_training_param"]["model"].update(
        descriptor="se_e2_a")), CHECK, "default_training_param.model"),
    Case("train_backend jax", edit("param.json", lambda p: p.update(train_backend="jax")), CHECK,
         "train_backend"),
    Case("fine-tune a frozen .pth", edit("param.json", pytorch(training_finetune_model=["m.pth"] * 4)),
         CHECK, "training_finetune_model"),
    Case("compress DPA-3", edit("param.json", lambda p: (dpa3(p), pytorch(dp_compress=True)(p))), CHECK,
         "dp_compress"),
    Case("reuse key without training_reuse_iter",
         edit("param.json", lambda p: p.update(training_reuse_start_lr=1e-4)), CHECK,
         "training_reuse_start_lr"),
    Case("old ratio out of range", edit("param.json", lambda p: p.update(
        training_reuse_iter=1, training_reuse_old_ratio=1.5)), CHECK, "training_reuse_old_ratio"),
    Case("iter0 model dirs not there", edit("param.json", lambda p: p.update(
        training_init_model=True, training_iter0_model_path=["old/00[0-3]"])), CHECK,
         "training_iter0_model_path"),
    Case("fine-tune model not there", edit("param.json", pytorch(
        training_finetune_model=["a/model.ckpt.pt"] * 4)), CHECK, "training_finetune_model[0]"),
    Case("two ways to start iteration 0", edit("param.json", lambda p: p.update(
        training_init_frozen_model=["a.pb"] * 4, training_finetune_model=["a.pb"] * 4)), CHECK,
         "training_finetune_model"),
    Case("training_resume unknown", edit("param.json", lambda p: p.update(training_resume="restart")), CHECK,
         "training_resume"),
    # strings copied into engine inputs
    Case("type name with ';'", edit("param.json", lambda p: p.update(type_map=["H", "C;rm"])), CHECK,
         "type_map"),
    Case("type name with a space", edit("param.json", lambda p: p.update(type_map=["H", "C C"])), CHECK,
         "type_map"),
    Case("type name with a newline", edit("param.json", lambda p: p.update(type_map=["H", "C\nX"])), CHECK,
         "type_map"),
    Case("xtb method with a newline", edit("param.json", lambda p: p["fp_params"].update(
        method="gfn2\n$include /etc/passwd")), CHECK, "fp_params.method"),
    Case("CP2K PROJECT with an @INCLUDE line", edit("param.json", cp2k_project), CHECK,
         "user_fp_params.GLOBAL.PROJECT"),
    Case("CP2K kind name with a newline", edit("param.json", cp2k_kind), CHECK,
         "user_fp_params.FORCE_EVAL.SUBSYS.KIND._[0]"),
    Case("key with a newline", edit("param.json", lambda p: p.update({"fp_task_max\n": 3})), CHECK,
         "fp_task_max"),
    # what run / init_bulk / test would write
    Case("run in a missing work dir", lambda w: None, (*RUN, "-w", "nowhere"), "init_data_sys[0]"),
    Case("run with data at nothing", edit("param.json", lambda p: p.update(init_data_sys=["nothing"])), RUN,
         "init_data_sys[0]"),
    Case("run with a machine missing a stage", edit("machine.json", lambda m: m.pop("fp")), RUN, "fp"),
    Case("run with a command not on PATH",
         edit("machine.json", lambda m: m["train"].update(command="dp-nope")), RUN, "train.command"),
    Case("init_bulk with no such element", edit("init.json", lambda i: i.update(elements=["H", "Xx"])), INIT,
         "elements[1]"),
    Case("init_bulk with an unreadable POSCAR", raw("CH4.POSCAR", b"not a POSCAR\n"), INIT, "CH4.POSCAR"),
    Case("init_bulk element with a newline", edit("init.json", lambda i: i.update(elements=["H", "C\n"])),
         INIT, "elements"),
    Case("test type name with a newline", edit("test.json", lambda t: t["interaction"].update(
        type_map={"Cu\n": 0})), TEST, "type_map"),
    Case("test structure unreadable", raw("confs/std-fcc/POSCAR", b"garbage\n"), TEST, "POSCAR"),
    Case("test model type_map misses an element", edit("test.json", lambda t: t["interaction"].update(
        type_map={"Al": 0})), TEST, "type_map"),
]


def test_the_table_is_broad():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.args[0] for c in CASES} == {"check", "run", "init_bulk", "test"}


def _in_process(cwd: Path, args: tuple[str, ...], monkeypatch) -> tuple[int, str, str]:
    """`dpgen ARGS` run in this process from ``cwd`` (click's runner: the same entry point and error
    handling as the command, without paying the interpreter start-up on every row)."""
    from click.testing import CliRunner

    from dpgen_ng.cli import main

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PATH", os.environ["PATH"])  # main() puts the venv's bin first; undone after
    res = CliRunner().invoke(main, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def _check_row(base: Path, tmp_path: Path, case: Case, run) -> None:  # noqa: ANN001 - a runner
    w = tmp_path / "w"
    shutil.copytree(base, w, symlinks=True)
    case.prepare(w)
    before = listing(w)
    code, stdout, stderr = run(w, case.args)
    assert "Traceback" not in stderr, stderr
    assert code == 2, stdout + stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert case.says in lines[0], lines[0]
    assert listing(w) == before
    assert not (w / "nowhere").exists()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(base, tmp_path, case, monkeypatch):
    _check_row(base, tmp_path, case, lambda w, args: _in_process(w, args, monkeypatch))


# one row per command through the real `dpgen` process: exit code, stderr and no traceback as a
# user sees them
PROCESS_ROWS = [next(c for c in CASES if c.args[0] == cmd) for cmd in ("check", "run", "init_bulk", "test")]


@pytest.mark.parametrize("case", PROCESS_ROWS, ids=str)
def test_bad_input_in_a_real_process(base, tmp_path, case):
    def run(w: Path, args: tuple[str, ...]) -> tuple[int, str, str]:
        out = dpgen(w, *args)
        return out.returncode, out.stdout, out.stderr

    _check_row(base, tmp_path, case, run)
