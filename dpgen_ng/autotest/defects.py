"""``vacancy`` and ``interstitial``: formation energies of point defects in a supercell.

One task per symmetry-distinct site (pymatgen's space-group analysis of the relaxed cell).
Interstitial sites are the vertices of the Voronoi tessellation of the host (for fcc: the
octahedral and tetrahedral holes), one per symmetry orbit, roomiest first.

E_f(vacancy) = E_def − N_def · e_bulk; E_f(interstitial of a host element) = E_def − N_def · e_bulk;
for a foreign element the inserted atom has no chemical potential here (as DP-GEN):
E_def − (N_def − 1) · e_bulk. e_bulk is the energy per atom of the relaxed structure.
"""

from __future__ import annotations

from typing import Any

import dpdata
import numpy as np

from dpgen_ng.autotest.base import Outcome, Plan, Property, Row, from_pmg, register, to_pmg

SYMPREC = 0.01  # Å


def distinct_sites(equi: dpdata.System) -> list[int]:
    """One atom index per symmetry orbit of the structure."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sym = SpacegroupAnalyzer(to_pmg(equi), symprec=SYMPREC).get_symmetrized_structure()
    return sorted(group[0] for group in sym.equivalent_indices)


def _periodic_unique(frac: np.ndarray, lattice: np.ndarray, tol: float) -> np.ndarray:
    keep: list[np.ndarray] = []
    for f in frac:
        if all(np.linalg.norm(((f - k + 0.5) % 1.0 - 0.5) @ lattice) > tol for k in keep):
            keep.append(f)
    return np.array(keep)


def interstitial_sites(equi: dpdata.System, min_room: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """(fractional position, distance to the nearest atom) per distinct interstitial site."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from scipy.spatial import Voronoi

    host = to_pmg(equi)
    lattice = np.array(host.lattice.matrix)
    frac = np.array(host.frac_coords) % 1.0
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])
    images = (frac[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    vertices = Voronoi(images @ lattice).vertices @ np.linalg.inv(lattice)
    inside = vertices[np.all((vertices > -1e-6) & (vertices < 1 - 1e-6), axis=1)] % 1.0
    candidates = _periodic_unique(np.round(inside, 8), lattice, 0.05)
    ops = SpacegroupAnalyzer(host, symprec=SYMPREC).get_symmetry_operations(cartesian=False)

    def room(f: np.ndarray) -> float:
        return float(np.min(np.linalg.norm(((images - f + 0.5) % 1.0 - 0.5) @ lattice, axis=1)))

    orbits: list[tuple[np.ndarray, float]] = []
    seen: list[np.ndarray] = []
    for f in sorted(candidates, key=lambda x: (-round(room(x), 4), tuple(np.round(x, 4)))):
        if any(np.linalg.norm(((f - s + 0.5) % 1.0 - 0.5) @ lattice) < 0.05 for s in seen):
            continue
        r = room(f)
        if r < min_room:
            continue
        orbit = _periodic_unique(np.array([op.operate(f) % 1.0 for op in ops]), lattice, 0.05)
        seen.extend(orbit)
        orbits.append((f, r))
    return orbits


def _formation(plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome,
               ref_atoms: list[int]) -> dict[str, Any]:
    out = {}
    for i, (plan, o, n_ref) in enumerate(zip(plans, outcomes, ref_atoms)):
        key = f"{plan['label']}-{plan['supercell']}-task.{i:06d}"
        out[key] = {**plan, "formation_energy": o.energy - n_ref * equi.epa, "energy": o.energy,
                    "equi_epa": equi.epa, "natoms": o.natoms, "converged": o.converged}
    return out


@register
class Vacancy(Property):
    type = "vacancy"

    def plans(self, equi: dpdata.System) -> list[Plan]:
        sc = self.params["supercell"]
        big = equi.replicate(tuple(sc))
        out = []
        for idx in distinct_sites(equi):
            pos = equi["coords"][0][idx]
            drop = int(np.argmin(np.linalg.norm(big["coords"][0] - pos, axis=1)))
            element = equi["atom_names"][equi["atom_types"][idx]]
            defect = big.copy()
            defect = defect.pick_atom_idx([i for i in range(big.get_natoms()) if i != drop])
            out.append(Plan(defect, {"label": f"{element}{idx}", "element": element, "site": idx,
                                     "supercell": sc}))
        return out

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        return _formation(plans, outcomes, equi, [o.natoms for o in outcomes])

    prefix = "E_vac"

    def rows(self, result: dict[str, Any]) -> list[Row]:
        return [Row(f"{self.prefix} {v['label']} (eV)", v["formation_energy"], "eV") for v in result.values()]

    def text(self, result: dict[str, Any]) -> str:
        lines = ["Structure:                  Vac_E(eV)      E(eV)  equi_E(eV/atom)"]
        lines += [f"{k:<26s} {v['formation_energy']:10.4f} {v['energy']:12.4f} {v['equi_epa']:10.4f}"
                  for k, v in result.items()]
        return "\n".join(lines) + "\n"


@register
class Interstitial(Property):
    type = "interstitial"

    def plans(self, equi: dpdata.System) -> list[Plan]:
        from pymatgen.core import Structure

        sc = self.params["supercell"]
        min_dist = self.params["conf_filters"].get("min_dist")
        sites = interstitial_sites(equi)
        out = []
        for element in self.params["insert_ele"]:
            for k, (frac, room) in enumerate(sites):
                if min_dist is not None and room < min_dist:
                    continue
                big: Structure = to_pmg(equi) * sc
                big.append(element, (np.array(frac) / np.array(sc)) % 1.0)
                out.append(Plan(from_pmg(big, self.type_map),
                                {"label": f"{element}@site{k}", "element": element,
                                 "site_frac": np.round(frac, 6).tolist(), "nearest_atom": round(room, 4),
                                 "supercell": sc}))
        return out

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        host = {equi.structure["atom_names"][t] for t in equi.structure["atom_types"]}
        refs = [o.natoms if p["element"] in host else o.natoms - 1 for p, o in zip(plans, outcomes)]
        return _formation(plans, outcomes, equi, refs)

    prefix = "E_int"
    rows = Vacancy.rows

    def text(self, result: dict[str, Any]) -> str:
        lines = ["Insert_ele-Struct:          Inter_E(eV)    E(eV)  equi_E(eV/atom)"]
        lines += [f"{k:<26s} {v['formation_energy']:10.4f} {v['energy']:12.4f} {v['equi_epa']:10.4f}"
                  for k, v in result.items()]
        return "\n".join(lines) + "\n"
