"""The venv's fast `lmp` launcher: the entry point's environment, merged with the job's own."""

from __future__ import annotations

import subprocess

from dpgen_ng.launcher import script


def test_launcher_merges_the_environment_like_the_entry_point(tmp_path):
    found = {"binary": "/usr/bin/env",
             "env": {"LD_LIBRARY_PATH": "/venv/tf:/venv/deepmd/lib", "LD_PRELOAD": "/venv/libcudart.so.12",
                     "LAMMPS_PLUGIN_PATH": "/venv/deepmd/lib", "DP_INTRA_OP_PARALLELISM_THREADS": "0",
                     "TF2_BEHAVIOR": "1"}}
    launcher = tmp_path / "lmp"
    launcher.write_text(script(found))
    # the job's values come first (paths) or win (defaults), as deepmd/lmp.py does it
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/job/lib", "LAMMPS_PLUGIN_PATH": "/job/plugins",
           "DP_INTRA_OP_PARALLELISM_THREADS": "1"}
    out = subprocess.run(["bash", str(launcher)], env=env, capture_output=True, text=True, check=True).stdout
    got = dict(line.split("=", 1) for line in out.splitlines())
    assert got["LD_LIBRARY_PATH"] == "/job/lib:/venv/tf:/venv/deepmd/lib"
    assert got["LD_PRELOAD"] == "/venv/libcudart.so.12"
    assert got["LAMMPS_PLUGIN_PATH"] == "/venv/deepmd/lib:/job/plugins"
    assert got["DP_INTRA_OP_PARALLELISM_THREADS"] == "1" and got["TF2_BEHAVIOR"] == "1"
