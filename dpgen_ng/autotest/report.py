"""The comparison printed by ``dpgen test``: one table per structure (model, reference, relative
error), ``test_report.json`` in the work dir, and a PNG of each EOS curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.autotest.base import Row, property_class
from dpgen_ng.autotest.run import ConfReport
from dpgen_ng.config.autotest import TestParams

RELAX_ROWS = (("E (eV/atom)", "energy_per_atom", "eV/atom"), ("V (Å^3/atom)", "volume_per_atom", "Å^3/atom"))


def rows_of(prop: str, result: dict[str, Any], params: TestParams) -> list[Row]:
    if prop == "relaxation":
        return [Row(label, result[key], unit) for label, key, unit in RELAX_ROWS]
    spec = next(p for p in params.properties if p.type == prop)
    return property_class(prop)(spec.params, params.interactions[0].type_map).rows(result)


def compare(rep: ConfReport, params: TestParams) -> list[dict[str, Any]]:
    """[{property, quantity, model, reference, rel_error}] for one structure."""
    roles = [i.role for i in params.interactions]
    order = ["relaxation"] + [p.type for p in params.properties if not p.skip]
    out = []
    for prop in order:
        values: dict[str, dict[str, float]] = {}
        for role in roles:
            result = rep.results.get(role, {}).get(prop)
            if result is not None:
                values[role] = {r.quantity: r.value for r in rows_of(prop, result, params)}
        quantities = list(dict.fromkeys(q for role in roles for q in values.get(role, {})))
        if not quantities:
            why = "; ".join(f"{role}: {rep.problems[role][prop]}" for role in roles
                            if prop in rep.problems.get(role, {}))
            out.append({"property": prop, "quantity": None, "problem": why or "no result"})
            continue
        for q in quantities:
            row: dict[str, Any] = {"property": prop, "quantity": q}
            for role in roles:
                row[role] = values.get(role, {}).get(q)
            m, r = row.get("model"), row.get("reference")
            row["difference"] = m - r if m is not None and r is not None else None
            row["rel_error"] = (m - r) / abs(r) if m is not None and r not in (None, 0) else None
            problems = [f"{role}: {rep.problems[role][prop]}" for role in roles
                        if prop in rep.problems.get(role, {})]
            if problems:
                row["problem"] = "; ".join(problems)
            notes = [f"{role}: {rep.notes[role][prop]}" for role in roles if prop in rep.notes.get(role, {})]
            if notes:
                row["note"] = "; ".join(notes)
            out.append(row)
    return out


def _fmt(x: float | None, width: int = 12) -> str:
    if x is None:
        return f"{'-':>{width}s}"
    return f"{x:{width}.4f}" if abs(x) < 1e5 else f"{x:{width}.4g}"


def table(rep: ConfReport, rows: list[dict[str, Any]], params: TestParams) -> str:
    two = len(params.interactions) > 1
    head = f"{'property':<13s} {'quantity':<28s} {'model':>12s}"
    if two:
        head += f" {'reference':>12s} {'difference':>12s} {'rel. error':>10s}"
    names = " vs ".join(f"{i.role}: {i.describe()}" for i in params.interactions)
    lines = [f"== {rep.conf}  ({names})", head, "-" * len(head)]
    for row in rows:
        if row["quantity"] is None:
            lines.append(f"{row['property']:<13s} no result: {row['problem']}")
            continue
        line = f"{row['property']:<13s} {row['quantity']:<28s} {_fmt(row.get('model'))}"
        if two:
            err = row["rel_error"]
            line += f" {_fmt(row.get('reference'))} {_fmt(row.get('difference'))}"
            line += f" {'-' if err is None else f'{100 * err:+.2f}%':>10s}"
        if row.get("problem") or row.get("note"):
            line += f"   ({row.get('problem') or row['note']})"
        lines.append(line)
    return "\n".join(lines)


def eos_png(rep: ConfReport, params: TestParams, path: Path) -> Path | None:
    """E/atom against V/atom of each interaction, points and Birch–Murnaghan fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.eos import birchmurnaghan

    curves = [(i, rep.results.get(i.role, {}).get("eos")) for i in params.interactions]
    curves = [(i, r) for i, r in curves if r]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for (inter, res), color in zip(curves, ("tab:blue", "tab:orange")):
        v, e = np.array(res["volume_per_atom"]), np.array(res["energy_per_atom"])
        ax.plot(v, e, "o", color=color, label=f"{inter.role}: {inter.describe()}")
        fit = res.get("fit")
        if fit and fit.get("B0_prime") is not None:
            vv = np.linspace(v.min(), v.max(), 200)
            ax.plot(vv, birchmurnaghan(vv, fit["E0"], fit["B0"] / 160.21766208, fit["B0_prime"], fit["V0"]),
                    "-", color=color, lw=1)
    ax.set_xlabel("volume (Å$^3$/atom)")
    ax.set_ylabel("energy (eV/atom)")
    ax.set_title(f"EOS of {rep.conf}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
