"""``eos``: energy per atom against volume per atom, with a Birch–Murnaghan fit."""

from __future__ import annotations

from typing import Any

import dpdata
import numpy as np

from dpgen_ng.autotest.base import EV_A3_IN_GPA, Outcome, Plan, Property, Row, register, transformed


def volumes(start: float, end: float, step: float) -> list[float]:
    """DP-GEN's range: start, start + step, … while below ``end`` (the end is left out)."""
    out, n = [], 0
    while start + n * step < end - 1e-9 * step:
        out.append(round(start + n * step, 12))
        n += 1
    return out


def birch_murnaghan(vols: np.ndarray, energies: np.ndarray) -> dict[str, float] | None:
    """Equilibrium volume, energy and bulk modulus (GPa) from a Birch–Murnaghan fit (ASE)."""
    from ase.eos import EquationOfState

    if len(vols) < 5:
        return None
    eos = EquationOfState(list(vols), list(energies), eos="birchmurnaghan")
    try:
        v0, e0, b0 = eos.fit(warn=False)
    except Exception:  # noqa: BLE001 - no minimum in the data: no fit
        return None
    bp = float(eos.eos_parameters[2]) if getattr(eos, "eos_parameters", None) is not None else None
    inside = bool(min(vols) <= v0 <= max(vols))
    return {"V0": float(v0), "E0": float(e0), "B0": float(b0 * EV_A3_IN_GPA), "B0_prime": bp,
            "minimum_inside_range": inside}


@register
class Eos(Property):
    type = "eos"

    def plans(self, equi: dpdata.System) -> list[Plan]:
        p = self.params
        v0 = abs(np.linalg.det(equi["cells"][0])) / equi.get_natoms()
        out = []
        for v in volumes(p["vol_start"], p["vol_end"], p["vol_step"]):
            target = v if p["vol_abs"] else v * v0
            scale = (target / v0) ** (1 / 3)
            out.append(Plan(transformed(equi, equi["cells"][0] * scale, equi["coords"][0] * scale),
                            {"volume_per_atom": target, "scale": scale}))
        return out

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        vols = np.array([o.volume / o.natoms for o in outcomes])
        epa = np.array([o.epa for o in outcomes])
        return {"volume_per_atom": vols.tolist(), "energy_per_atom": epa.tolist(),
                "fit": birch_murnaghan(vols, epa)}

    def rows(self, result: dict[str, Any]) -> list[Row]:
        fit = result.get("fit")
        if not fit:  # fewer than 5 points, or no minimum: the lowest point instead
            k = int(np.argmin(result["energy_per_atom"]))
            return [Row("V of lowest E (Å^3/atom)", result["volume_per_atom"][k], "Å^3/atom"),
                    Row("lowest E (eV/atom)", result["energy_per_atom"][k], "eV/atom")]
        return [Row("V0 (Å^3/atom)", fit["V0"], "Å^3/atom"), Row("E0 (eV/atom)", fit["E0"], "eV/atom"),
                Row("B0 (GPa)", fit["B0"], "GPa")]

    def text(self, result: dict[str, Any]) -> str:
        lines = [" VpA(A^3)  EpA(eV)"]
        pairs = zip(result["volume_per_atom"], result["energy_per_atom"])
        lines += [f"{v:9.4f}  {e:10.6f}" for v, e in pairs]
        fit = result.get("fit")
        if fit:
            lines.append(f"# Birch-Murnaghan: V0 = {fit['V0']:.4f} A^3/atom, E0 = {fit['E0']:.6f} eV/atom, "
                         f"B0 = {fit['B0']:.2f} GPa, B0' = {fit['B0_prime']:.2f}")
            if not fit["minimum_inside_range"]:
                lines.append("# warning: the fitted minimum is outside the scanned volumes")
        else:
            lines.append("# no fit: fewer than 5 volumes, or no minimum")
        return "\n".join(lines) + "\n"
