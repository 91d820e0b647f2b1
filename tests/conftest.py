"""Shared fixtures. The real engines (dp, lmp, xtb, cp2k) are expected on PATH: `make test`
installs them; running pytest from the venv puts the venv's bin first on PATH here."""

from __future__ import annotations

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
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """For pytest-xdist's ``--dist loadgroup`` (``make test`` runs two workers): each module's
    tests go to one worker, so a module-scoped run is made once; every test on the Slurm + sshd
    of :func:`sched` goes to one worker, the only one that starts and stops them."""
    for item in items:
        group = "sched" if "sched" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


SCHED_DIR = Path(os.environ.get("DPGEN_NG_SCHED_DIR", "/tmp/dpgen_ng-sched"))


@pytest.fixture(scope="session")
def sched() -> dict:
    """A real single-node Slurm (munge, slurmctld, slurmd) and an sshd on 127.0.0.1:2222 with key
    auth, brought up by tests/infra/slurm-sshd-up.sh (idempotent) and stopped at the end."""
    if shutil.which("slurmctld") is None or not Path("/usr/sbin/sshd").exists():
        pytest.skip("Slurm/sshd are not installed (make test installs them)")
    env = dict(os.environ, SCHED_DIR=str(SCHED_DIR), SSH_PORT="2222", SSH_USER="root")
    import subprocess

    up = subprocess.run(["bash", str(INFRA / "slurm-sshd-up.sh")], env=env, capture_output=True, text=True,
                        timeout=300)
    if up.returncode != 0:
        pytest.fail("could not start Slurm + sshd:\n" + up.stdout[-2000:] + up.stderr[-2000:])
    values = {}
    for line in (SCHED_DIR / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value
    yield values
    subprocess.run(["bash", str(INFRA / "slurm-sshd-down.sh")], env=env, capture_output=True, timeout=120)


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
