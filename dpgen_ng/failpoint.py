"""Fault injection for the resume tests: ``DPGEN_NG_KILL_AT=<point>`` makes the process kill
itself (SIGKILL) when it reaches that point, e.g. ``before-record:0:8`` (post_fp of iteration 0
has finished, its record line is not written yet). A test cannot reach such a point by timing a
kill from outside: the window is microseconds wide. Unset, it costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

ENV = "DPGEN_NG_KILL_AT"


def reach(point: str) -> None:
    if os.environ.get(ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
