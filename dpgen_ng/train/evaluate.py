"""The committee against reference labels: validation RMSEs on the held-out set, and the
calibration of the model deviation on the frames just labeled.

The models run in one child process per call (``train/worker.py``; DeePMD-kit's own inference and
deviation formula); the figures are computed here with numpy. Results are kept in
``00.train/validation.json`` and ``02.fp/calibration.json`` with a key of their inputs, so a
step that runs again after a kill reuses them instead of evaluating again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.data import expand_systems
from dpgen_ng.errors import StageError, UserError
from dpgen_ng.io import atomic_write_json, tail
from dpgen_ng.summary import (
    Calibration,
    CalibrationBin,
    Errors,
    Validation,
    calibration_from_json,
    validation_from_json,
)

log = logging.getLogger("dpgen_ng.evaluate")
VALIDATION_FILE = "validation.json"  # in 00.train
CALIBRATION_FILE = "calibration.json"  # in 02.fp


def run_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Run one worker task in a child process; its failure is a StageError with its stderr."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="dpgen_ng-worker-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req.write_text(json.dumps(request))
        err = Path(tmp) / "stderr"
        with open(err, "w") as fh:
            proc = subprocess.run([sys.executable, "-m", "dpgen_ng.train.worker", str(req), str(out)],
                                  stdout=subprocess.DEVNULL, stderr=fh, env=env)
        if proc.returncode != 0 or not out.is_file():
            raise StageError(f"DeePMD-kit {request['task']} failed (exit code {proc.returncode}): "
                             f"{tail(err, 3)}")
        return json.loads(out.read_text())


def validation_systems(workdir: Path, prefix: str, entries: Sequence[str]) -> list[Path]:
    """Every deepmd/npy system under ``validation_data_sys`` (relative paths from the work dir)."""
    found: list[Path] = []
    for i, entry in enumerate(entries):
        p = Path(os.path.join(prefix, entry) if prefix else entry).expanduser()
        root = p if p.is_absolute() else Path(workdir) / p
        systems = expand_systems(root)
        if not systems:
            raise UserError(f"no deepmd/npy data (no type.raw) under {root}", f"validation_data_sys[{i}]",
                            "a labeled deepmd/npy directory that is never trained on")
        found += systems
    return found


# ----- figures (pure numpy) -------------------------------------------------------------------


def _rmse(total: float, count: int) -> float | None:
    return float(np.sqrt(total / count)) if count else None


def _errors(systems: Sequence[dict[str, Any]], model: int | None) -> Errors:
    """RMSEs of one model (index) or of the committee mean (None) over several systems."""
    def pick(s: dict[str, Any], key: str) -> np.ndarray:
        return np.asarray(s["mean_" + key] if model is None else s[key][model])

    e_sum = f_sum = v_sum = 0.0
    e_n = f_n = v_n = 0
    for s in systems:
        na, nf = s["natoms"], s["nframes"]
        f_sum += float(pick(s, "f_sse").sum())
        f_n += 3 * na * nf
        if "e_err" in s:
            e_sum += float(np.square(pick(s, "e_err") / na).sum())
            e_n += nf
        if "v_sse" in s:
            v_sum += float(pick(s, "v_sse").sum()) / na**2
            v_n += 9 * nf
    return Errors(_rmse(e_sum, e_n), _rmse(f_sum, f_n), _rmse(v_sum, v_n))


def validation_figures(systems: Sequence[dict[str, Any]], n_models: int) -> Validation:
    return Validation(sum(s["nframes"] for s in systems),
                      tuple(_errors(systems, k) for k in range(n_models)), _errors(systems, None))


def calibration_figures(devi: np.ndarray, error: np.ndarray, n_bins: int = 4) -> Calibration:
    """Rank correlation of deviation and true error, median error/deviation, and the mean true
    error in bins of equal frame counts along the deviation."""
    from scipy.stats import spearmanr

    devi, error = np.asarray(devi, dtype=float), np.asarray(error, dtype=float)
    keep = np.isfinite(devi) & np.isfinite(error)
    devi, error = devi[keep], error[keep]
    n = int(devi.size)
    rho = None
    if n >= 3 and np.ptp(devi) > 0 and np.ptp(error) > 0:
        rho = float(spearmanr(devi, error).statistic)
    pos = devi > 0
    ratio = float(np.median(error[pos] / devi[pos])) if pos.any() else None
    bins = []
    if n:
        order = np.argsort(devi, kind="stable")
        for part in np.array_split(order, min(n_bins, n)):
            d, e = devi[part], error[part]
            bins.append(CalibrationBin(float(d.min()), float(d.max()), int(part.size), float(d.mean()),
                                       float(e.mean())))
    return Calibration(n, rho, ratio, tuple(bins))


# ----- caching ---------------------------------------------------------------------------------


def _key(models: Sequence[Path], groups: dict[str, list[str]], hash_contents: set[str]) -> str:
    """Identifies the inputs: models and fixed data by path, size and mtime; the groups named in
    ``hash_contents`` (labels that post_fp rewrites identically) by their contents."""
    h = hashlib.sha256()
    for m in models:
        st = Path(m).resolve().stat()
        h.update(f"{Path(m).resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
    for name in sorted(groups):
        for root in groups[name]:
            for f in sorted(Path(root).rglob("*")):
                if not f.is_file():
                    continue
                h.update(f"{name} {f.relative_to(root)} {f.stat().st_size}\n".encode())
                h.update(f.read_bytes() if name in hash_contents else str(f.stat().st_mtime_ns).encode())
    return h.hexdigest()


def _cached(path: Path, key: str) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if d.get("key") == key else None


def evaluate(models: Sequence[Path], type_map: Sequence[str], validation: Sequence[Path],
             labels: Sequence[Path], val_file: Path, cal_file: Path | None) -> tuple[Validation | None,
                                                                                    Calibration | None]:
    """Validation figures of the committee ``models`` on ``validation`` (written to ``val_file``)
    and calibration figures on ``labels`` (written to ``cal_file``); None for an empty set."""
    groups = {"validation": [str(p) for p in validation], "labels": [str(p) for p in labels]}
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return None, None
    key = _key(models, groups, {"labels"})
    val_old = _cached(val_file, key) if validation else {}
    cal_old = _cached(cal_file, key) if (labels and cal_file is not None) else {}
    if val_old is not None and cal_old is not None:
        return validation_from_json(val_old or None), calibration_from_json(cal_old or None)
    t0 = time.monotonic()
    result = run_worker({"task": "predict", "models": [str(Path(m).resolve()) for m in models],
                         "type_map": list(type_map), "groups": groups})["groups"]
    seconds = round(time.monotonic() - t0, 2)  # the child process, start-up included
    val = cal = None
    if validation:
        val = validation_figures(result["validation"], len(models))
        atomic_write_json(val_file, {"key": key, "seconds": seconds, **asdict(val)})
    if labels:
        systems = result["labels"]
        cal = calibration_figures(np.concatenate([s["devi_f"] for s in systems]),
                                  np.concatenate([s["error_f"] for s in systems]))
        if cal_file is not None:
            atomic_write_json(cal_file, {"key": key, "seconds": seconds, **asdict(cal),
                                         "frames": [{"path": s["path"], "devi_f": s["devi_f"],
                                                     "error_f": s["error_f"]} for s in systems]})
    return val, cal
