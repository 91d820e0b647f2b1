"""xtb as DP-GEN's ``fp_style: custom`` labeler, for bench/dpgen_side.py (not part of dpgen_ng).

DP-GEN 0.14 has no xtb style; its ``custom`` style writes each candidate as ``input/`` (dpdata's
deepmd/raw), runs the fp command in the task dir and reads ``labels/`` (deepmd/raw with labels;
DP-GEN names the command's log ``output``).
This runs the same xtb command line as dpgen_ng's xtb labeler with its default settings, and
imports only numpy, ase.units and our light xtb reader, so the per-task cost is xtb's.

    python bench/dpgen_xtb.py          (in a DP-GEN fp task dir)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from ase.units import Bohr, Hartree

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dpgen_ng.xtbio import METHOD_FLAGS, read_engrad  # noqa: E402

RAW = ("box.raw", "coord.raw", "type.raw", "type_map.raw", "nopbc")


def main() -> int:
    src, out = Path("input"), Path("labels")  # DP-GEN logs to "output"
    names = (src / "type_map.raw").read_text().split()
    types = np.loadtxt(src / "type.raw", dtype=int, ndmin=1)
    coords = np.loadtxt(src / "coord.raw", ndmin=2)[0].reshape(-1, 3)
    lines = [str(len(types)), "dpgen custom frame"]
    lines += [f"{names[t]:<3s} {x:.10f} {y:.10f} {z:.10f}" for t, (x, y, z) in zip(types, coords)]
    Path("conf.xyz").write_text("\n".join(lines) + "\n")
    cmd = ["xtb", "conf.xyz", *METHOD_FLAGS["gfn2"].split(), "--grad", "--chrg", "0", "--uhf", "0",
           "--acc", "1", "--etemp", "300", "--iterations", "250"]
    with open("xtb.out", "w") as so, open("xtb.err", "w") as se:
        rc = subprocess.call(cmd, stdout=so, stderr=se)
    if rc != 0:
        return rc
    energy, grad = read_engrad(Path("conf.engrad"))
    out.mkdir(exist_ok=True)
    for name in RAW:
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    np.savetxt(out / "energy.raw", [energy * Hartree])
    np.savetxt(out / "force.raw", (-grad * Hartree / Bohr).reshape(1, -1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
