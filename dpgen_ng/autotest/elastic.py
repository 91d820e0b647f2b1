"""``elastic``: the elastic tensor (GPa) from stresses of deformed cells (pymatgen's fit), and
the Voigt bulk, shear and Young's moduli and Poisson ratio (as DP-GEN reports them)."""

from __future__ import annotations

from typing import Any

import dpdata
import numpy as np

from dpgen_ng.autotest.base import Outcome, Plan, Property, Row, from_pmg, register, to_pmg

# the constants compared in the table (an orthotropic crystal's nine; all 36 are in result.json)
ORTHOTROPIC = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2), (3, 3), (4, 4), (5, 5))


@register
class Elastic(Property):
    type = "elastic"

    def plans(self, equi: dpdata.System) -> list[Plan]:
        from pymatgen.analysis.elasticity.strain import DeformedStructureSet, Strain

        n, s = self.params["norm_deform"], self.params["shear_deform"]
        dss = DeformedStructureSet(to_pmg(equi), symmetry=False, norm_strains=[-n, -n / 2, n / 2, n],
                                   shear_strains=[-s, -s / 2, s / 2, s])
        return [Plan(from_pmg(st, self.type_map),
                     {"deformation": np.asarray(d).tolist(),
                      "strain": np.asarray(Strain.from_deformation(d)).tolist()})
                for d, st in zip(dss.deformations, dss)]

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        from pymatgen.analysis.elasticity import ElasticTensor
        from pymatgen.analysis.elasticity.strain import Strain
        from pymatgen.analysis.elasticity.stress import Stress

        if equi.stress is None or any(o.stress is None for o in outcomes):
            raise ValueError("the interaction gave no stress: elastic constants need it")
        strains = [Strain(np.array(p["strain"])) for p in plans]
        stresses = [Stress(o.stress) for o in outcomes]
        et = ElasticTensor.from_independent_strains(strains, stresses, eq_stress=Stress(equi.stress),
                                                    vasp=False, tol=1e-7)
        c = np.asarray(et.voigt)
        bv, gv = float(et.k_voigt), float(et.g_voigt)
        ev = 9 * bv * gv / (3 * bv + gv)
        uv = 0.5 * (3 * bv - 2 * gv) / (3 * bv + gv)
        return {"elastic_tensor": c.round(6).tolist(), "BV": bv, "GV": gv, "EV": ev, "uV": uv}

    def rows(self, result: dict[str, Any]) -> list[Row]:
        c = np.asarray(result["elastic_tensor"])
        rows = [Row(f"C{i + 1}{j + 1} (GPa)", c[i, j], "GPa") for i, j in ORTHOTROPIC]
        return rows + [Row("BV (GPa)", result["BV"], "GPa"), Row("GV (GPa)", result["GV"], "GPa"),
                       Row("EV (GPa)", result["EV"], "GPa"), Row("uV", result["uV"], "")]

    def text(self, result: dict[str, Any]) -> str:
        c = np.asarray(result["elastic_tensor"])
        lines = [" ".join(f"{x:9.2f}" for x in row) for row in c]
        lines += [f"# Bulk   Modulus BV = {result['BV']:.2f} GPa",
                  f"# Shear  Modulus GV = {result['GV']:.2f} GPa",
                  f"# Youngs Modulus EV = {result['EV']:.2f} GPa",
                  f"# Poission Ratio uV = {result['uV']:.2f} "]
        return "\n".join(lines) + "\n"
