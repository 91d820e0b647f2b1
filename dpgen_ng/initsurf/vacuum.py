"""DP-GEN's series of elongations: how far each slab is pulled from its periodic image along z.

With ``vacuum_resol`` of one value r: r, 2r, … below ``vacuum_max``. With two values (r0, r1)
and ``mid_point`` m: r0, 2r0, … below m, then m, m + r1, … below ``vacuum_max``. Without
``vacuum_resol``: ``head = int(vacuum_numb * head_ratio)`` evenly spaced values from 0 to m (both
ends) and ``vacuum_numb - head`` evenly spaced steps from m to ``vacuum_max`` (both ends).
Values sharing a directory name (``elong-%.3f``) count once.
"""

from __future__ import annotations

import numpy as np

TOL = 1e-6  # Å: a value this close to the end of a half-open range is the end itself


def half_open(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, … strictly below ``stop`` (by more than TOL)."""
    out = []
    k = 0
    while start + k * step < stop - TOL:
        out.append(start + k * step)
        k += 1
    return out


def elong_name(elong: float) -> str:
    return f"elong-{elong:.3f}"


def _distinct(values: list[float]) -> list[float]:
    """Sorted, one value per directory name (the first of equal names)."""
    seen: dict[str, float] = {}
    for v in sorted(values):
        seen.setdefault(elong_name(v), v)
    return list(seen.values())


def elongations(vacuum_max: float, vacuum_resol: tuple[float, ...] | None, mid_point: float | None,
                vacuum_numb: int | None, head_ratio: float | None) -> list[float]:
    """The elongations (Å) of DP-GEN's ``init_surf`` stage 2, in increasing order."""
    if vacuum_resol:
        if len(vacuum_resol) == 1:
            return _distinct(half_open(vacuum_resol[0], vacuum_max, vacuum_resol[0]))
        if mid_point is None:
            raise ValueError("two vacuum_resol values need mid_point")
        head = half_open(vacuum_resol[0], mid_point, vacuum_resol[0])
        return _distinct(head + half_open(mid_point, vacuum_max, vacuum_resol[1]))
    if vacuum_numb is None or head_ratio is None or mid_point is None:
        raise ValueError("without vacuum_resol: vacuum_numb, head_ratio and mid_point")
    head_numb = int(vacuum_numb * head_ratio)
    head = np.linspace(0.0, mid_point, head_numb).tolist()
    tail = np.linspace(mid_point, vacuum_max, vacuum_numb - head_numb + 1).tolist()
    return _distinct(head + tail)
