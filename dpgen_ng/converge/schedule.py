"""Which exploration job each iteration runs, and when the run stops.

Without ``max_iter`` (DP-GEN's semantics) iteration i runs ``model_devi_jobs[i]``. A job with
``max_iter`` is repeated, with the new models and fresh velocities, until the convergence
criteria hold for it or it has run ``max_iter`` times; then the next job starts (or, with
``fatal_at_max``, the run stops with an error). Everything here is a pure function of the
settings and the summaries on disk, so a killed run that starts again decides the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpgen_ng.config.param import RunParams
from dpgen_ng.record import iter_name
from dpgen_ng.summary import IterationSummary


@dataclass(frozen=True)
class Slot:
    """What one iteration explores: ``model_devi_jobs[job]``, for the ``repeat``-th time (from 0),
    with ``nsteps`` MD steps."""

    job: int
    repeat: int
    nsteps: int


@dataclass(frozen=True)
class StopReason:
    kind: str  # converged | not_converged | finished | max_iter | error
    text: str
    iteration: int | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.kind in ("converged", "not_converged", "finished") else 1


def _nsteps(params: RunParams, job: int, prev: IterationSummary | None, repeat: int) -> int:
    """ArcaNN's heuristic, when the job asks for it: a repeat after a mostly accurate iteration
    of the same job runs ``factor`` times longer, up to ``max_factor`` × the job's nsteps."""
    ex = params.model_devi_jobs[job]
    grow = ex.grow_nsteps
    if grow is None or prev is None or repeat == 0:
        return ex.nsteps
    acc, _, total = prev.totals()
    if total and acc / total >= grow.if_accurate_above:
        return min(prev.nsteps * grow.factor, ex.nsteps * grow.max_factor)
    return prev.nsteps


def next_slot(params: RunParams, prev: IterationSummary | None, iteration: int) -> Slot | None:
    """The slot of ``iteration`` given the summary of the one before (None: nothing is left)."""
    n_jobs = len(params.model_devi_jobs)
    if iteration == 0:
        return Slot(0, 0, params.model_devi_jobs[0].nsteps)
    if prev is None:  # a work dir from before summaries existed: DP-GEN's one job per iteration
        return Slot(iteration, 0, params.model_devi_jobs[iteration].nsteps) if iteration < n_jobs else None
    job = prev.job
    ex = params.model_devi_jobs[job] if job < n_jobs else None
    if ex is not None and ex.max_iter and not prev.converged and prev.repeat + 1 < ex.max_iter:
        return Slot(job, prev.repeat + 1, _nsteps(params, job, prev, prev.repeat + 1))
    if job + 1 < n_jobs:
        return Slot(job + 1, 0, params.model_devi_jobs[job + 1].nsteps)
    return None


def _figures(summary: IterationSummary) -> str:
    return "; ".join(f"{v.criterion}: {v.figures}" for v in summary.verdicts)


def after_iteration(params: RunParams, summary: IterationSummary) -> StopReason | None:
    """Asked once post_fp of an iteration has finished: stop now, or go on (None)."""
    it = summary.iteration
    ex = params.model_devi_jobs[summary.job] if summary.job < len(params.model_devi_jobs) else None
    if (ex is not None and ex.max_iter and ex.fatal_at_max and not summary.converged
            and summary.repeat + 1 >= ex.max_iter):
        return StopReason("max_iter", f"stopped: model_devi_jobs[{summary.job}] reached max_iter "
                                      f"{ex.max_iter} in iteration {it} without converging "
                                      f"(fatal_at_max): {_figures(summary)}", it)
    if summary.converged and next_slot(params, summary, it + 1) is None:
        return StopReason("converged", f"converged at iteration {it} (model_devi_jobs[{summary.job}]"
                                       f", repeat {summary.repeat}): {_figures(summary)}; final models "
                                       f"in {iter_name(it)}/00.train", it)
    return None


def exhausted(params: RunParams, last: IterationSummary | None, iteration: int) -> StopReason:
    """Every job has run and the final models (``iteration``) are trained."""
    models = f"final models in {iter_name(iteration)}/00.train"
    if not params.convergence:
        return StopReason("finished", f"finished: all {len(params.model_devi_jobs)} model_devi_jobs "
                                      f"explored; {models}", iteration)
    figures = f": {_figures(last)}" if last is not None and last.verdicts else ""
    where = f" (last explored in iteration {last.iteration})" if last is not None else ""
    return StopReason("not_converged", f"not converged after the last job{where}{figures}; {models}, "
                                       "trained on every label; append jobs or relax the criteria and "
                                       "run again to go on", iteration)
