"""The iteration-0 gate: catch a broken setup before it spends the labeling budget.

- Before anything runs: the descriptor's ``sel`` against DeePMD-kit's neighbour statistics of the
  initial data and of the configurations to explore (a refusal, exit code 2).
- After the first training: the models' own fit (``lcurve.out``) against trust_hi.
- After the first exploration: the share of failed frames.
The two later checks warn (one line with the figures and what to check) and are kept in the
iteration's files, so ``dpgen status`` shows them too.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.errors import UserError

log = logging.getLogger("dpgen_ng.gate")
FIT_FILE = "fit.json"  # in 00.train
FAILED_WARN_RATIO = 0.5

# descriptor types whose sel is one number per type, and those whose sel counts all types at once
PER_TYPE_SEL = {"se_e2_a", "se_a", "se_e2_r", "se_r", "se_e3", "se_at", "se_a_3be", "se_e3_tebd"}
MIXED_SEL = {"se_atten", "dpa1", "se_atten_v2"}


def descriptor_sels(desc: dict[str, Any], where: str) -> Iterator[tuple[str, float, Any, bool]]:
    """(key path, rcut, sel, mixed_type) of every descriptor with an explicit sel."""
    kind = desc.get("type", "se_e2_a")
    if kind == "hybrid":
        for i, sub in enumerate(desc.get("list", [])):
            yield from descriptor_sels(sub, f"{where}.list[{i}]")
        return
    sel = desc.get("sel")
    if sel is None or isinstance(sel, str) or "rcut" not in desc:
        return  # "auto": DeePMD-kit sets it from the same statistics
    if kind in PER_TYPE_SEL or kind in MIXED_SEL:
        yield f"{where}.sel", float(desc["rcut"]), sel, kind in MIXED_SEL


def _short(sel: Sequence[int], need: Sequence[int]) -> bool:
    return len(sel) == len(need) and any(s < n for s, n in zip(sel, need))


def check_sel(training_param: dict[str, Any], type_map: Sequence[str], data: Sequence[Path],
              confs: Sequence[Any]) -> None:
    """Refuse a ``sel`` below the neighbour counts of the initial data or of the confs
    (dpdata Systems). DeePMD-kit only logs this inside each training; the models then ignore the
    farthest neighbours, and every exploration frame near such a structure fails."""
    from dpgen_ng.train.evaluate import run_worker

    desc = training_param.get("model", {}).get("descriptor", {})
    checks = list(descriptor_sels(desc, "default_training_param.model.descriptor"))
    if not checks:
        return
    with tempfile.TemporaryDirectory(prefix="dpgen_ng-confs-") as tmp:
        conf_dirs = []
        for i, system in enumerate(confs):
            out = Path(tmp) / f"conf.{i:05d}"
            system.to("deepmd/npy", str(out))
            conf_dirs.append(str(out))
        groups = {"initial data": [str(d) for d in data], "configurations": conf_dirs}
        for where, rcut, sel, mixed in checks:
            stats = run_worker({"task": "neighbors", "rcut": rcut, "type_map": list(type_map),
                                "mixed_type": mixed, "groups": groups})["groups"]
            for name, st in stats.items():
                need = st["max_nbor_size"]
                have = [sel] if isinstance(sel, int) else list(sel)
                if mixed and not isinstance(sel, int):
                    have = [sum(sel)]
                if _short(have, need):
                    raise UserError(
                        f"sel {sel} is below the neighbour counts of the {name} (DeePMD-kit's "
                        f"neighbour statistics within rcut {rcut:g} Å: up to {need})", where,
                        f"at least {need if not mixed else need[0]}, or \"auto\"; the models would "
                        "ignore the farthest neighbours and the exploration would mostly fail")
            log.info("sel %s covers the neighbour counts %s of the initial data and configurations "
                     "(rcut %g Å)", sel, [s["max_nbor_size"] for s in stats.values()], rcut)


def read_lcurve(path: Path, last: int = 3) -> dict[str, float] | None:
    """The mean of the last rows of a DeePMD-kit ``lcurve.out``, by column name."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    header = next((ln.lstrip("#").split() for ln in lines if ln.startswith("#") and "step" in ln), None)
    rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not header or not rows:
        return None
    data = np.array([[float(x) for x in r[:len(header)]] for r in rows[-last:]])
    return {name: float(np.nanmean(data[:, i])) for i, name in enumerate(header) if name != "step"}


def fit_report(lcurves: Sequence[Path], iteration: int, f_hi: float,
               model: str = "graph.000.pb") -> dict[str, Any]:
    """Each model's training-set RMSEs from its lcurve.out; at iteration 0, a warning when the
    models cannot fit their own data to within trust_hi."""
    models = [read_lcurve(p) or {} for p in lcurves]
    forces = [m["rmse_f_trn"] for m in models if np.isfinite(m.get("rmse_f_trn", np.nan))]
    warnings = []
    if iteration == 0 and forces and float(np.mean(forces)) >= f_hi:
        warnings.append(
            f"iteration 0: the models fit their own training data only to a force RMSE of "
            f"{np.mean(forces):.3g} eV/Å (lcurve.out, mean of {len(forces)}), above trust_hi {f_hi:g} "
            "eV/Å, so most explored frames will fail: check the type_map order and units of the "
            f"initial data, sel, and numb_steps (`dp test -m 00.train/{model} -s <data>`)")
    return {"models": models, "warnings": warnings}


def exploration_warning(iteration: int, systems: dict[str, dict[str, Any]],
                        max_devi_f: np.ndarray) -> str | None:
    """At iteration 0, a warning when most explored frames failed (dpgen#1363). ``systems``: the
    selection's counts and trust levels per system."""
    failed = sum(s["failed"] for s in systems.values())
    total = sum(s["total"] for s in systems.values())
    if iteration != 0 or not total or failed / total < FAILED_WARN_RATIO:
        return None
    f_hi = min(s["trust"]["f_hi"] for s in systems.values())
    median = float(np.median(max_devi_f)) if len(max_devi_f) else float("nan")
    return (f"iteration 0: {100 * failed / total:.1f} % of the explored frames failed (max force "
            f"deviation ≥ trust_hi {f_hi:g} eV/Å; median {median:.3g} eV/Å): the initial models "
            "disagree wildly; check the initial data with `dp test`, the type_map order, sel and the "
            "trust levels before spending more labels")
