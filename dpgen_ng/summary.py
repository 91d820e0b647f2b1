"""The per-iteration summary: what one iteration explored, selected and labeled, how good its
committee was, and whether the convergence criteria held.

post_fp writes it once, as its last act (``iter.NNNNNN/summary.json``); train, the stop rule,
``dpgen status`` and reports read it through :func:`read_summary` instead of picking raw JSON
files apart. It is rebuilt identically when post_fp runs again after a kill.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dpgen_ng.explore.select import Trust
from dpgen_ng.io import atomic_write_json
from dpgen_ng.record import iter_name

SUMMARY_FILE = "summary.json"
VERSION = 1


@dataclass(frozen=True)
class SystemSummary:
    """Frame counts of one system (after model_devi_skip), the levels used, the labels it got."""

    accurate: int
    candidate: int
    failed: int
    skipped: int
    trust: Trust
    labeled: int = 0

    @property
    def total(self) -> int:
        return self.accurate + self.candidate + self.failed + self.skipped

    @property
    def accurate_ratio(self) -> float:
        return self.accurate / self.total if self.total else 0.0

    @property
    def failed_ratio(self) -> float:
        # an empty system (every MD task lost, or every frame skipped) tells nothing good
        return self.failed / self.total if self.total else 1.0


@dataclass(frozen=True)
class Errors:
    """RMSEs against reference labels: energy and virial per atom (eV), force (eV/Å)."""

    energy: float | None
    force: float | None
    virial: float | None = None


@dataclass(frozen=True)
class Validation:
    """Every committee member's errors on the held-out set, and those of the committee mean."""

    nframes: int
    models: tuple[Errors, ...]
    mean: Errors

    def worst(self, what: str) -> float | None:
        values = [getattr(m, what) for m in self.models if getattr(m, what) is not None]
        return max(values) if values else None


@dataclass(frozen=True)
class CalibrationBin:
    """Frames whose model deviation lies in [lo, hi): their mean deviation and mean true error."""

    lo: float
    hi: float
    n: int
    mean_devi: float
    mean_error: float


@dataclass(frozen=True)
class Calibration:
    """How well the committee's max force deviation predicted its true max force error
    (committee mean vs reference), on the frames just labeled."""

    nframes: int
    spearman: float | None  # rank correlation of deviation and true error (None below 3 frames)
    error_over_devi: float | None  # median of true error / deviation
    bins: tuple[CalibrationBin, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """One convergence criterion's outcome for one iteration, with the figures behind it."""

    criterion: str
    holds: bool
    figures: str


@dataclass(frozen=True)
class IterationSummary:
    iteration: int
    job: int  # index in model_devi_jobs
    repeat: int  # 0 for the first iteration of that job
    nsteps: int
    systems: dict[str, SystemSummary]
    labeled: int
    label_failures: dict[str, int]
    validation: Validation | None = None
    calibration: Calibration | None = None
    verdicts: tuple[Verdict, ...] = ()
    converged: bool | None = None  # None: the param has no convergence section
    warnings: tuple[str, ...] = field(default=())

    def totals(self) -> tuple[int, int, int]:
        """(accurate, failed, all frames) over the systems."""
        s = self.systems.values()
        return (sum(x.accurate for x in s), sum(x.failed for x in s), sum(x.total for x in s))

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = VERSION
        for tag, s in self.systems.items():
            out["systems"][tag].update(accurate_ratio=s.accurate_ratio, failed_ratio=s.failed_ratio,
                                       total=s.total)
        return out


def _errors(d: dict[str, Any]) -> Errors:
    return Errors(d.get("energy"), d.get("force"), d.get("virial"))


def validation_from_json(d: dict[str, Any] | None) -> Validation | None:
    if not d:
        return None
    return Validation(d["nframes"], tuple(_errors(m) for m in d["models"]), _errors(d["mean"]))


def calibration_from_json(d: dict[str, Any] | None) -> Calibration | None:
    if not d:
        return None
    bins = tuple(CalibrationBin(b["lo"], b["hi"], b["n"], b["mean_devi"], b["mean_error"])
                 for b in d.get("bins", ()))
    return Calibration(d["nframes"], d.get("spearman"), d.get("error_over_devi"), bins)


def from_json(d: dict[str, Any]) -> IterationSummary:
    systems = {}
    for tag, s in d["systems"].items():
        t = s["trust"]
        trust = Trust(t["f_lo"], t["f_hi"], t.get("v_lo"), t.get("v_hi"), t.get("adapted", False))
        systems[tag] = SystemSummary(s["accurate"], s["candidate"], s["failed"], s["skipped"], trust,
                                     s.get("labeled", 0))
    return IterationSummary(
        iteration=d["iteration"], job=d["job"], repeat=d["repeat"], nsteps=d["nsteps"],
        systems=systems, labeled=d["labeled"], label_failures=dict(d.get("label_failures", {})),
        validation=validation_from_json(d.get("validation")),
        calibration=calibration_from_json(d.get("calibration")),
        verdicts=tuple(Verdict(v["criterion"], v["holds"], v["figures"]) for v in d.get("verdicts", ())),
        converged=d.get("converged"),
        warnings=tuple(d.get("warnings", ())),
    )


def summary_path(workdir: Path, iteration: int) -> Path:
    return Path(workdir) / iter_name(iteration) / SUMMARY_FILE


def write_summary(workdir: Path, summary: IterationSummary) -> None:
    atomic_write_json(summary_path(workdir, summary.iteration), summary.as_json())


def read_summary(workdir: Path, iteration: int) -> IterationSummary | None:
    """The summary of an iteration whose post_fp has finished, else None."""
    path = summary_path(workdir, iteration)
    try:
        return from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def read_summaries(workdir: Path, upto: int) -> list[IterationSummary]:
    """The summaries of iterations 0 … upto-1 that exist, in order."""
    out = []
    for it in range(upto):
        s = read_summary(workdir, it)
        if s is not None:
            out.append(s)
    return out
