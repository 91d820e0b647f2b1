"""``surface``: surface energies (J/m²) of every slab pymatgen's ``generate_all_slabs`` makes up to
``max_miller``: γ = (E_slab − N_slab · e_bulk) / (2A), A the in-plane area of the slab as made."""

from __future__ import annotations

from typing import Any

import dpdata
import numpy as np

from dpgen_ng.autotest.base import EV_A2_IN_J_M2, Outcome, Plan, Property, Row, from_pmg, register, to_pmg


@register
class Surface(Property):
    type = "surface"

    def plans(self, equi: dpdata.System) -> list[Plan]:
        from pymatgen.core.surface import generate_all_slabs

        p = self.params
        slabs = generate_all_slabs(to_pmg(equi), max_index=p["max_miller"], min_slab_size=p["min_slab_size"],
                                   min_vacuum_size=p["min_vacuum_size"])
        out = []
        for slab in slabs:
            system = from_pmg(slab.get_sorted_structure(), self.type_map)
            cell = system["cells"][0].copy()
            area = float(np.linalg.norm(np.cross(cell[0], cell[1])))
            cell[2, 0] += p["pert_xz"]  # DP-GEN tilts c a little to break the slab's symmetry
            system.data["cells"] = cell[None]
            miller = [int(x) for x in slab.miller_index]
            out.append(Plan(system, {"label": str(miller), "miller": miller, "shift": float(slab.shift),
                                     "area": area}))
        return out

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        out = {}
        for i, (plan, o) in enumerate(zip(plans, outcomes)):
            gamma = (o.energy - o.natoms * equi.epa) / (2 * plan["area"]) * EV_A2_IN_J_M2
            out[f"{plan['label']}-task.{i:06d}"] = {**plan, "surface_energy": gamma, "epa": o.epa,
                                                   "equi_epa": equi.epa, "natoms": o.natoms,
                                                   "converged": o.converged}
        return out

    def rows(self, result: dict[str, Any]) -> list[Row]:
        best: dict[str, float] = {}  # the lowest-energy termination of each Miller index
        for v in result.values():
            key = "".join(str(m) for m in v["miller"])
            best[key] = min(best.get(key, np.inf), v["surface_energy"])
        return [Row(f"gamma ({k}) (J/m^2)", g, "J/m^2") for k, g in best.items()]

    def text(self, result: dict[str, Any]) -> str:
        lines = ["Miller_Indices:             Surf_E(J/m^2)  EpA(eV)  equi_EpA(eV)"]
        lines += [f"{k:<26s} {v['surface_energy']:10.4f} {v['epa']:10.4f} {v['equi_epa']:10.4f}"
                  for k, v in result.items()]
        return "\n".join(lines) + "\n"
