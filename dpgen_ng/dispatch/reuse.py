"""Finished tasks taken back from a rollback archive instead of being run again.

``dpgen rollback`` moves what undone steps made into ``.dpgen/rollback/NNN`` and lists the
archive in the ledger. A task is the same task when its id (the hash of its directory, command
and input files, also written in its rc file) is the same, so a pending task whose id is in an
archive's rc file at the same place gets that task's outputs back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dpgen_ng.ledger import Ledger

ARCHIVES_KEY = "rollback_archives"  # ledger meta: JSON list of archive dirs, oldest first


def archives(ledger: Ledger) -> list[str]:
    """The rollback archives of this work dir, newest first."""
    return list(reversed(json.loads(ledger.meta_get(ARCHIVES_KEY) or "[]")))


def restore_task(workdir: Path, found_in: list[str], where: str, task_dir: Path, tid: str,
                 rc_file: str) -> bool:
    """Take the finished task ``tid`` back from the first archive in ``found_in`` that has it at
    ``where`` (its path relative to the work dir): the files that ``task_dir`` lacks (its outputs;
    the inputs were just made again) are moved in, the rc file (``rc_file``) last. Returns whether
    it was found."""
    for arch in found_in:
        src = Path(workdir) / arch / where
        try:
            parts = (src / rc_file).read_text().split()
        except OSError:
            continue
        if len(parts) < 4 or parts[3] != tid:
            continue
        task_dir.mkdir(parents=True, exist_ok=True)
        for item in sorted(src.iterdir()):
            dest = task_dir / item.name
            if item.name != rc_file and not dest.exists() and not dest.is_symlink():
                os.replace(item, dest)
        os.replace(src / rc_file, task_dir / rc_file)
        return True
    return False
