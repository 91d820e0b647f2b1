"""The property protocol of ``dpgen test``: plan tasks from the relaxed structure, compute the
result from their outcomes, and name the quantities to compare between two interactions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import dpdata
import numpy as np

EV_A3_IN_GPA = 160.21766208  # 1 eV/Å³ in GPa
EV_A2_IN_J_M2 = 16.021766208  # 1 eV/Å² in J/m²


@dataclass(frozen=True)
class Plan:
    """One task of a property: its structure and what the result needs to know about it."""

    structure: dpdata.System
    meta: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What one finished calculation gave."""

    energy: float  # eV, total
    natoms: int
    stress: np.ndarray | None  # GPa, 3×3, tensile positive (None when the engine has none)
    structure: dpdata.System  # the final structure
    converged: bool = True

    @property
    def epa(self) -> float:
        return self.energy / self.natoms

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.structure["cells"][0])))

    @classmethod
    def from_labels(cls, labels: dpdata.LabeledSystem, converged: bool = True,
                    structure: dpdata.System | None = None) -> Outcome:
        volume = abs(np.linalg.det(labels["cells"][0]))
        stress = None
        if "virials" in labels.data:
            stress = -labels["virials"][0] / volume * EV_A3_IN_GPA
        return cls(float(labels["energies"][0]), labels.get_natoms(), stress,
                   structure if structure is not None else labels, converged)


@dataclass(frozen=True)
class Row:
    """One compared quantity."""

    quantity: str
    value: float
    unit: str


class Property:
    """Base class: ``plans`` from the relaxed structure, ``compute`` → result.json, ``rows``."""

    type: ClassVar[str] = ""

    def __init__(self, params: dict[str, Any], type_map: tuple[str, ...]) -> None:
        self.params = params
        self.type_map = type_map

    def plans(self, equi: dpdata.System) -> list[Plan]:
        raise NotImplementedError

    def compute(self, plans: list[dict[str, Any]], outcomes: list[Outcome], equi: Outcome) -> dict[str, Any]:
        raise NotImplementedError

    def text(self, result: dict[str, Any]) -> str:
        """``result.out``: the result for a human."""
        return "\n".join(f"{r.quantity:<28s} {r.value:14.6f} {r.unit}" for r in self.rows(result)) + "\n"

    def rows(self, result: dict[str, Any]) -> list[Row]:
        raise NotImplementedError


_registry: dict[str, type[Property]] = {}


def register(cls: type[Property]) -> type[Property]:
    _registry[cls.type] = cls
    return cls


def property_class(name: str) -> type[Property]:
    return _registry[name]


# ----- structure helpers ----------------------------------------------------------------------


def to_pmg(system: dpdata.System) -> Any:
    from pymatgen.core import Lattice, Structure

    names = system["atom_names"]
    return Structure(Lattice(system["cells"][0]), [names[t] for t in system["atom_types"]],
                     system["coords"][0], coords_are_cartesian=True)


def from_pmg(structure: Any, type_map: tuple[str, ...]) -> dpdata.System:
    """A dpdata system of a pymatgen structure, atoms grouped in ``type_map`` order."""
    symbols = [site.specie.symbol for site in structure]
    order = sorted(range(len(symbols)), key=lambda i: type_map.index(symbols[i]))
    types = np.array([type_map.index(symbols[i]) for i in order])
    return dpdata.System(data={
        "atom_names": list(type_map), "atom_numbs": [int(np.sum(types == t)) for t in range(len(type_map))],
        "atom_types": types, "orig": np.zeros(3),
        "cells": np.array(structure.lattice.matrix)[None],
        "coords": np.array(structure.cart_coords)[order][None],
    })


def transformed(system: dpdata.System, cell: np.ndarray, coords: np.ndarray) -> dpdata.System:
    out = system.copy()
    out.data["cells"] = np.asarray(cell, dtype=float)[None]
    out.data["coords"] = np.asarray(coords, dtype=float)[None]
    return out

