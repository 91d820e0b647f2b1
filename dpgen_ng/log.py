"""Logging: ``dpgen.log`` in the work dir plus the console; dpdispatcher's chatter to its own file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def quiet_dpdispatcher() -> None:
    """Import dpdispatcher without the ``dpdispatcher.log`` it creates in the current directory.

    dpdispatcher opens that file when it logs at import; muting INFO for the import keeps the
    (lazily opened) file closed, then its handlers are replaced by ours.
    """
    if "dpdispatcher" not in sys.modules:
        logging.disable(logging.INFO)
        try:
            import dpdispatcher  # noqa: F401
        finally:
            logging.disable(logging.NOTSET)
    dlog = logging.getLogger("dpdispatcher")
    for handler in list(dlog.handlers):
        if getattr(handler, "_dpgen_ng", False):
            continue
        if isinstance(handler, (logging.FileHandler, logging.StreamHandler)):
            dlog.removeHandler(handler)


def setup_logging(workdir: Path | None, verbose: bool = False) -> None:
    """Console at INFO (DEBUG with ``verbose``); ``<workdir>/dpgen.log`` at DEBUG."""
    quiet_dpdispatcher()
    root = logging.getLogger("dpgen_ng")
    root.setLevel(logging.DEBUG)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    dlog = logging.getLogger("dpdispatcher")
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(Path(workdir) / "dpgen.log")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(fh)
        (Path(workdir) / ".dpgen").mkdir(exist_ok=True)
        dfh = logging.FileHandler(Path(workdir) / ".dpgen" / "dpdispatcher.log")
        dfh._dpgen_ng = True  # type: ignore[attr-defined]
        dfh.setFormatter(logging.Formatter(FORMAT))
        for h in list(dlog.handlers):
            if getattr(h, "_dpgen_ng", False):
                dlog.removeHandler(h)
                h.close()
        dlog.addHandler(dfh)
    warn = logging.StreamHandler(sys.stderr)
    warn.setLevel(logging.WARNING)
    warn.setFormatter(logging.Formatter("%(asctime)s dpdispatcher: %(message)s", "%H:%M:%S"))
    warn._dpgen_ng = True  # type: ignore[attr-defined]
    dlog.addHandler(warn)
