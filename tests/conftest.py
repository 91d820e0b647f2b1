"""Shared fixtures. The real engines (dp, lmp, xtb, cp2k) are expected on PATH: `make test`
installs them; running pytest from the venv puts the venv's bin first on PATH here."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from dpgen_ng.log import quiet_dpdispatcher

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "methane"
DATA = Path(__file__).resolve().parent / "data"

os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
for var in ("OMP_NUM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS", "DP_INTER_OP_PARALLELISM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
quiet_dpdispatcher()


def load_example(name: str) -> dict:
    return json.loads((EXAMPLE / name).read_text())


def write_json(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj, indent=2))
    return path


@pytest.fixture
def example_param() -> dict:
    return load_example("param-dpgen.json")


@pytest.fixture
def example_machine() -> dict:
    return load_example("machine.json")


@pytest.fixture
def methane_dir(tmp_path: Path) -> Path:
    """A work dir holding a copy of the methane example files."""
    for f in EXAMPLE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


INFRA = Path(__file__).resolve().parent / "infra"
SCHED_DIR = Path(os.environ.get("DPGEN_NG_SCHED_DIR", "/tmp/dpgen_ng-sched"))


def _sched_users(change: int, script: str) -> None:
    """Add (1) or remove (-1) this process among the users of the test Slurm + sshd and, under
    the same lock, run ``script`` (up: always; down: once no live user is left). ``make test``
    runs two pytest workers, each with its own session: the first to leave must not stop them
    under the other, nor a suite under another suite on the same machine."""
    import subprocess

    SCHED_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SCHED_DIR=str(SCHED_DIR), SSH_PORT="2222", SSH_USER="root")
    with open(SCHED_DIR / "users.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = SCHED_DIR / "users"
        users = {int(w) for w in path.read_text().split()} if path.exists() else set()
        users = {pid for pid in users if pid != os.getpid() and Path(f"/proc/{pid}").exists()}
        if change > 0:
            users.add(os.getpid())
        path.write_text(" ".join(map(str, sorted(users))))
        run = change > 0 or not users
        done = subprocess.run(["bash", str(INFRA / script)], env=env, capture_output=True, text=True,
                              timeout=300) if run else None
    if change > 0 and done is not None and done.returncode != 0:
        pytest.fail("could not start Slurm + sshd:\n" + done.stdout[-2000:] + done.stderr[-2000:])


@pytest.fixture(scope="session")
def sched() -> dict:
    """A real single-node Slurm (munge, slurmctld, slurmd) and an sshd on 127.0.0.1:2222 with key
    auth, brought up by tests/infra/slurm-sshd-up.sh (idempotent) and stopped when the last
    pytest process using them ends."""
    if shutil.which("slurmctld") is None or not Path("/usr/sbin/sshd").exists():
        pytest.skip("Slurm/sshd are not installed (make test installs them)")
    _sched_users(1, "slurm-sshd-up.sh")
    values = {}
    for line in (SCHED_DIR / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    yield values
    _sched_users(-1, "slurm-sshd-down.sh")


def fake_deepmd(path: Path, type_map: tuple[str, ...] = ("H", "C"), types: tuple[int, ...] = (1, 0, 0, 0, 0),
                nframes: int = 3) -> Path:
    """A small deepmd/npy system with made-up labels, where only its existence and shape matter
    (``dpgen check`` reads the initial data as `dpgen run` will)."""
    import numpy as np

    rng = np.random.default_rng(0)
    natoms = len(types)
    (path / "set.000").mkdir(parents=True)
    (path / "type.raw").write_text("".join(f"{t}\n" for t in types))
    (path / "type_map.raw").write_text("".join(f"{t}\n" for t in type_map))
    np.save(path / "set.000" / "coord.npy", rng.normal(size=(nframes, natoms * 3)) + 5)
    np.save(path / "set.000" / "box.npy", np.tile(np.eye(3).ravel() * 10, (nframes, 1)))
    np.save(path / "set.000" / "energy.npy", rng.normal(size=nframes))
    np.save(path / "set.000" / "force.npy", rng.normal(size=(nframes, natoms * 3)))
    return path


def fake_confs(root: Path, poscar: Path, *dirs: str) -> None:
    """Copies of one POSCAR where a param's sys_configs globs look for configurations."""
    import shutil

    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(poscar, root / d / "POSCAR")
