"""record.dpgen: DP-GEN compatible step record, one ``iter step`` line per finished step."""

from __future__ import annotations

from pathlib import Path

from dpgen_ng.errors import UserError
from dpgen_ng.io import append_line_synced

STEPS = (
    "make_train",
    "run_train",
    "post_train",
    "make_model_devi",
    "run_model_devi",
    "post_model_devi",
    "make_fp",
    "run_fp",
    "post_fp",
)
STAGE_DIRS = ("00.train", "01.model_devi", "02.fp")
RECORD_NAME = "record.dpgen"
# the files a stage leaves in its directory (named here so that `dpgen status` reads them without
# importing the stages)
MANIFEST = "tasks.json"
RESUMED_FILE = "resumed.json"  # 00.train: models restarted from a checkpoint, with its steps
SELECTION_FILE = "selection.json"  # 02.fp: counts per system, trust levels used, picked frames
LABELS_FILE = "labels.json"  # 02.fp: labeled / failed (by kind) per task and per system


def read_record(workdir: Path) -> tuple[int, int]:
    """The last finished (iteration, step); (0, -1) when nothing has run. The last line wins."""
    path = Path(workdir) / RECORD_NAME
    if not path.exists():
        return 0, -1
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        return 0, -1
    parts = lines[-1].split()
    try:
        it, step = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise UserError(
            f"malformed last line {lines[-1]!r}", str(path), "'<iteration> <step>' integers"
        ) from None
    if not 0 <= step < len(STEPS):
        raise UserError(f"step {step} out of range", str(path), "a step in 0..8")
    return it, step


def next_step(last: tuple[int, int]) -> tuple[int, int]:
    it, step = last
    return (it + 1, 0) if step == len(STEPS) - 1 else (it, step + 1)


def append_record(workdir: Path, iteration: int, step: int) -> None:
    append_line_synced(Path(workdir) / RECORD_NAME, f"{iteration} {step}")


def iter_name(iteration: int) -> str:
    return f"iter.{iteration:06d}"
