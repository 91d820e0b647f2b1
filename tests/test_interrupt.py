"""SIGINT / SIGTERM handling: exit codes, the one line, and stopping local Shell jobs' trees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dpgen_ng.dispatch.local_stop import stop_jobs
from dpgen_ng.interrupt import jobs_line

COMMAND = """
import os, signal, time
from dpgen_ng.cli import handle_errors

@handle_errors
def command():
    os.kill(os.getpid(), signal.{sig})
    time.sleep(5)
    print("the signal did not stop the command")

command()
"""


@pytest.mark.parametrize("sig, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_gives_one_line_and_its_exit_code(sig, code):
    """In a fresh process: a test run may have left threads or signal masks behind."""
    out = subprocess.run([sys.executable, "-c", COMMAND.format(sig=sig)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == code, out.stderr
    assert out.stdout == ""
    assert out.stderr == f"interrupted ({sig}): no job was running; the same command resumes from there\n"


def test_jobs_line_says_what_happened_to_each_stage():
    assert jobs_line([], []) == "no job was running; the same command resumes from there"
    assert jobs_line([("train", "101", "Slurm"), ("train", "102", "Slurm")], []) == (
        "2 train job(s) still running under Slurm (job ids 101 102); the same command resumes and "
        "re-attaches to them")
    assert jobs_line([("model_devi", "9", "PBS")], [("fp", "7")]) == (
        "stopped 1 local fp job(s) (Shell, PID 7); 1 model_devi job(s) still running under PBS (job ids "
        "9); the same command resumes and runs their unfinished tasks again and re-attaches to the "
        "running ones")


def test_stop_jobs_ends_the_whole_tree_of_a_shell_job(tmp_path):
    """A job as dpdispatcher's Shell starts it (``bash <hash>.sub`` in the background, SIGINT
    ignored), with an engine below it that ignores SIGINT too."""
    script = tmp_path / "0123abcd.sub"
    script.write_text("sleep 300 &\nwait\n")
    job = subprocess.Popen(["bash", script.name], cwd=tmp_path, preexec_fn=lambda: signal.signal(
        signal.SIGINT, signal.SIG_IGN))
    time.sleep(0.3)
    pgrep = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True)
    child = int(pgrep.stdout.split()[0])
    other = subprocess.Popen(["sleep", "300"])  # not a job: never touched
    try:
        assert stop_jobs([str(job.pid), str(other.pid), "999999999", "x"]) == [str(job.pid)]
        job.wait(timeout=10)
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(child, 0)
                time.sleep(0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
