"""Stop criteria: small registered classes that judge one iteration from its summary.

The ``convergence`` section of param.json (our extension) lists one or more criteria; an
iteration has converged when all of them hold. Each criterion owns its keys (``KEYS``), as the
labelers do. A criterion only reads summaries: it does no I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from dpgen_ng.config.fields import Field, as_float, as_str, in_range, nearest, one_of, parse_section, positive
from dpgen_ng.errors import UserError
from dpgen_ng.registry import Registry
from dpgen_ng.summary import IterationSummary, Verdict

CRITERIA: Registry[StopCriterion] = Registry("convergence type")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


class StopCriterion(ABC):
    """Judges whether an iteration met a goal. ``history``: the earlier iterations' summaries."""

    name: ClassVar[str]
    KEYS: ClassVar[Mapping[str, Field]]

    @abstractmethod
    def check(self, current: IterationSummary, history: Sequence[IterationSummary]) -> Verdict:
        ...

    def needs(self) -> tuple[str, ...]:
        """Top-level param keys this criterion cannot work without (checked when the param is read)."""
        return ()

    def as_json(self) -> dict[str, Any]:
        return {"type": self.name, **asdict(self)}  # type: ignore[call-overload]


@CRITERIA.register("fixed-levels")
@dataclass(frozen=True)
class FixedLevels(StopCriterion):
    """Converged when the accurate ratio is at least ``conv_accuracy``, overall and per system."""

    conv_accuracy: float = 0.9
    KEYS: ClassVar[Mapping[str, Field]] = {
        "conv_accuracy": Field(in_range(as_float, 0.0, 1.0), default=0.9,
                               doc="the accurate ratio to reach (0 to 1)"),
    }

    def check(self, current: IterationSummary, history: Sequence[IterationSummary]) -> Verdict:
        acc, _, total = current.totals()
        overall = acc / total if total else 0.0
        low = [(tag, s.accurate_ratio) for tag, s in sorted(current.systems.items())
               if s.accurate_ratio < self.conv_accuracy]
        holds = total > 0 and overall >= self.conv_accuracy and not low
        sign = "≥" if overall >= self.conv_accuracy else "<"
        text = f"accurate {_pct(overall)} {sign} {_pct(self.conv_accuracy)}"
        if low and len(current.systems) > 1:
            text += " (below in system " + ", ".join(f"{t}: {_pct(r)}" for t, r in low) + ")"
        if not total:
            text = "no frames explored"
        return Verdict(self.name, holds, text)


@CRITERIA.register("adaptive-lower")
@dataclass(frozen=True)
class AdaptiveLower(StopCriterion):
    """Converged when the adapted trust_lo of every system moved by less than ``conv_tolerance``
    between consecutive iterations of the same job, over the last ``n_checked_steps`` of them,
    and the failed ratio of every system is at most ``max_failed_ratio``."""

    conv_tolerance: float = 0.05
    n_checked_steps: int = 2
    max_failed_ratio: float = 0.05
    KEYS: ClassVar[Mapping[str, Field]] = {
        "conv_tolerance": Field(positive(as_float), default=0.05, doc="eV/Å"),
        "n_checked_steps": Field(lambda v, w: _at_least_2(v, w), default=2),
        "max_failed_ratio": Field(in_range(as_float, 0.0, 1.0), default=0.05),
    }

    def needs(self) -> tuple[str, ...]:
        return ("model_devi_adapt_trust_lo",)

    def check(self, current: IterationSummary, history: Sequence[IterationSummary]) -> Verdict:
        same = [h for h in history if h.job == current.job and h.iteration < current.iteration]
        seq = (sorted(same, key=lambda h: h.iteration) + [current])[-self.n_checked_steps:]
        if len(seq) < self.n_checked_steps:
            lo = ", ".join(f"{s.trust.f_lo:.4g}" for s in current.systems.values())
            return Verdict(self.name, False, f"trust_lo {lo} eV/Å; {len(seq)} of {self.n_checked_steps} "
                                             f"iterations of job {current.job} to compare")
        holds = bool(current.systems)
        parts = []
        for tag, s in sorted(current.systems.items()):
            f_levels = [h.systems[tag].trust.f_lo for h in seq if tag in h.systems]
            v_levels = [h.systems[tag].trust.v_lo for h in seq if tag in h.systems]
            change = _largest_step(f_levels)
            ok = len(f_levels) == len(seq) and change < self.conv_tolerance
            if all(v is not None for v in v_levels):
                ok &= _largest_step(v_levels) < self.conv_tolerance  # type: ignore[arg-type]
            ok &= s.total > 0 and s.failed_ratio <= self.max_failed_ratio
            holds &= ok
            name = f"system {tag} " if len(current.systems) > 1 else ""
            parts.append(f"{name}trust_lo {' → '.join(f'{x:.4g}' for x in f_levels)} eV/Å (change "
                         f"{change:.3g} {'<' if change < self.conv_tolerance else '≥'} "
                         f"{self.conv_tolerance:g}), failed {_pct(s.failed_ratio)} "
                         f"{'≤' if s.failed_ratio <= self.max_failed_ratio else '>'} "
                         f"{_pct(self.max_failed_ratio)}")
        return Verdict(self.name, holds, "; ".join(parts) or "no systems explored")


@CRITERIA.register("validation")
@dataclass(frozen=True)
class HeldOut(StopCriterion):
    """Converged when the committee's RMSE on the held-out set (``validation_data_sys``) is at
    most ``force_rmse`` (eV/Å) and, if set, ``energy_rmse`` (eV/atom). ``of``: ``mean`` judges
    the committee-mean prediction, ``worst`` every member."""

    force_rmse: float | None = None
    energy_rmse: float | None = None
    of: str = "mean"
    KEYS: ClassVar[Mapping[str, Field]] = {
        "force_rmse": Field(positive(as_float), default=None, doc="eV/Å"),
        "energy_rmse": Field(positive(as_float), default=None, doc="eV/atom"),
        "of": Field(one_of("mean", "worst"), default="mean"),
    }

    def needs(self) -> tuple[str, ...]:
        return ("validation_data_sys",)

    def check(self, current: IterationSummary, history: Sequence[IterationSummary]) -> Verdict:
        val = current.validation
        if val is None:
            return Verdict(self.name, False, "no validation figures for this iteration")
        holds, parts = True, []
        limits = (("force", self.force_rmse, "eV/Å"), ("energy", self.energy_rmse, "eV/atom"))
        for what, limit, unit in limits:
            if limit is None:
                continue
            value = getattr(val.mean, what) if self.of == "mean" else val.worst(what)
            ok = value is not None and value <= limit
            holds &= ok
            shown = "n/a" if value is None else f"{value:.3g}"
            parts.append(f"{what} RMSE {shown} {'≤' if ok else '>'} {limit:g} {unit}")
        who = "committee mean" if self.of == "mean" else "worst model"
        return Verdict(self.name, holds, "; ".join(parts) + f" ({who}, {val.nframes} held-out frames)")


def _at_least_2(value: Any, where: str) -> int:
    from dpgen_ng.config.fields import as_int

    v = as_int(value, where)
    if v < 2:
        raise UserError(f"got {v}", where, "an integer ≥ 2 (the number of iterations whose trust_lo "
                                           "are compared)")
    return v


def _largest_step(levels: Sequence[float]) -> float:
    return max((abs(b - a) for a, b in zip(levels, levels[1:])), default=0.0)


def parse_criterion(value: Any, where: str) -> StopCriterion:
    if not isinstance(value, Mapping):
        raise UserError(f"got {type(value).__name__}", where,
                        "a mapping with a 'type' (" + ", ".join(CRITERIA.names()) + ")")
    kind = as_str(value.get("type"), f"{where}.type") if "type" in value else None
    if kind is None:
        raise UserError("missing 'type'", where, "one of " + ", ".join(CRITERIA.names()))
    cls = CRITERIA.get(kind)
    if cls is None:
        raise UserError(f"unknown convergence type '{kind}'", f"{where}.type",
                        nearest(kind, list(CRITERIA.names())))
    rest = {k: v for k, v in value.items() if k != "type"}
    settings = parse_section(rest, cls.KEYS, where)
    criterion = cls(**settings)
    if isinstance(criterion, HeldOut) and criterion.force_rmse is None and criterion.energy_rmse is None:
        raise UserError("no threshold", where, "force_rmse (eV/Å) and/or energy_rmse (eV/atom)")
    return criterion


def parse_convergence(value: Any, where: str) -> tuple[StopCriterion, ...]:
    """One criterion (a mapping) or a list of them; all must hold."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise UserError("empty list", where, "at least one criterion, or leave the key out")
    out = tuple(parse_criterion(v, f"{where}[{i}]" if isinstance(value, (list, tuple)) else where)
                for i, v in enumerate(items))
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise UserError("a convergence type given twice", where, "each type at most once")
    return out


def judge(criteria: Sequence[StopCriterion], current: IterationSummary,
          history: Sequence[IterationSummary]) -> tuple[tuple[Verdict, ...], bool | None]:
    """Every criterion's verdict, and whether they all hold (None without criteria)."""
    if not criteria:
        return (), None
    verdicts = tuple(c.check(current, history) for c in criteria)
    return verdicts, all(v.holds for v in verdicts)
