"""Dispatch: turn a machine.json section into dpdispatcher objects and run tasks (no chemistry)."""

from dpgen_ng.dispatch.runner import (
    RC_FILE,
    Dispatcher,
    RcInfo,
    TaskResult,
    TaskSpec,
    exit_code,
    read_task_rc,
    task_id,
)

__all__ = ["RC_FILE", "Dispatcher", "RcInfo", "TaskResult", "TaskSpec", "exit_code", "read_task_rc",
           "task_id"]
