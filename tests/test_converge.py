"""Convergence without engines: the criteria, adaptive trust_lo, the job schedule and stop rule,
the validation / calibration figures, the iteration-0 gate checks, and the summary file."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.converge.criteria import AdaptiveLower, FixedLevels, HeldOut, judge
from dpgen_ng.converge.schedule import Slot, after_iteration, exhausted, next_slot
from dpgen_ng.errors import UserError
from dpgen_ng.explore.select import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    AdaptiveTrust,
    classify_adaptive,
)
from dpgen_ng.summary import (
    Errors,
    IterationSummary,
    SystemSummary,
    Trust,
    Validation,
    from_json,
    read_summary,
    write_summary,
)
from dpgen_ng.train.evaluate import calibration_figures, validation_figures
from dpgen_ng.train.gate import exploration_warning, fit_report, read_lcurve


def system(acc: int, cand: int, fail: int, f_lo: float = 0.05, skipped: int = 0) -> SystemSummary:
    return SystemSummary(acc, cand, fail, skipped, Trust(f_lo, 0.15))


def summary(it: int, job: int = 0, repeat: int = 0, systems=None, val=None, converged=None,
            nsteps: int = 100) -> IterationSummary:
    systems = systems if systems is not None else {"000": system(9, 1, 0)}
    return IterationSummary(it, job, repeat, nsteps, systems, labeled=1, label_failures={}, validation=val,
                            converged=converged)


def errors(force: float, energy: float | None = None) -> Errors:
    return Errors(energy, force)


# ----- criteria ----------------------------------------------------------------------------------


def test_fixed_levels_overall_and_per_system():
    c = FixedLevels(0.9)
    assert c.check(summary(0, systems={"000": system(90, 10, 0)}), []).holds  # exactly at the level
    v = c.check(summary(0, systems={"000": system(99, 1, 0), "001": system(85, 15, 0)}), [])
    assert not v.holds  # overall 92 % but system 001 at 85 %
    assert "001: 85.0 %" in v.figures
    assert not c.check(summary(0, systems={"000": system(89, 10, 1)}), []).holds


def test_fixed_levels_empty_system_and_no_frames_do_not_converge():
    c = FixedLevels(0.5)
    assert not c.check(summary(0, systems={}), []).holds
    v = c.check(summary(0, systems={"000": system(10, 0, 0), "001": system(0, 0, 0)}), [])
    assert not v.holds  # an empty system (every MD task lost) has accurate ratio 0


def test_adaptive_lower_compares_trust_lo_within_the_same_job():
    c = AdaptiveLower(conv_tolerance=0.01, n_checked_steps=2, max_failed_ratio=0.05)
    first = summary(0, job=0, systems={"000": system(90, 10, 0, f_lo=0.080)})
    assert not c.check(first, []).holds  # nothing to compare with yet
    close = summary(1, job=0, repeat=1, systems={"000": system(90, 10, 0, f_lo=0.085)})
    v = c.check(close, [first])
    assert v.holds and "0.08 → 0.085" in v.figures
    far = summary(1, job=0, repeat=1, systems={"000": system(90, 10, 0, f_lo=0.1)})
    assert not c.check(far, [first]).holds
    other_job = summary(1, job=1, systems={"000": system(90, 10, 0, f_lo=0.080)})
    assert not c.check(other_job, [first]).holds  # a new job starts its own history


def test_adaptive_lower_needs_a_low_failed_ratio_and_counts_more_steps():
    c = AdaptiveLower(conv_tolerance=0.01, n_checked_steps=3, max_failed_ratio=0.05)
    h = [summary(i, repeat=i, systems={"000": system(90, 10, 0, f_lo=0.08)}) for i in range(2)]
    assert c.check(summary(2, repeat=2, systems={"000": system(90, 10, 0, f_lo=0.081)}), h).holds
    failing = summary(2, repeat=2, systems={"000": system(80, 10, 10, f_lo=0.081)})  # 10 % failed
    v = c.check(failing, h)
    assert not v.holds and "failed 10.0 % > 5.0 %" in v.figures
    assert not c.check(summary(2, repeat=2, systems={"000": system(90, 10, 0, f_lo=0.081)}), h[1:]).holds


def test_validation_criterion_mean_or_worst_and_energy():
    val = Validation(50, (errors(0.04, 0.002), errors(0.07, 0.001)), errors(0.045, 0.0015))
    s = summary(0, val=val)
    assert HeldOut(force_rmse=0.05).check(s, []).holds
    assert not HeldOut(force_rmse=0.05, of="worst").check(s, []).holds
    v = HeldOut(force_rmse=0.05, energy_rmse=0.001).check(s, [])
    assert not v.holds and "energy RMSE 0.0015 > 0.001 eV/atom" in v.figures
    assert not HeldOut(force_rmse=1.0).check(summary(0), []).holds  # no validation figures


def test_judge_needs_every_criterion():
    val = Validation(5, (errors(0.01),), errors(0.01))
    s = summary(0, systems={"000": system(95, 5, 0)}, val=val)
    verdicts, ok = judge((FixedLevels(0.9), HeldOut(force_rmse=0.02)), s, [])
    assert ok and len(verdicts) == 2
    verdicts, ok = judge((FixedLevels(0.99), HeldOut(force_rmse=0.02)), s, [])
    assert ok is False and [v.holds for v in verdicts] == [False, True]
    assert judge((), s, []) == ((), None)


# ----- config -----------------------------------------------------------------------------------


def with_keys(example: dict, **keys) -> dict:
    raw = copy.deepcopy(example)
    raw.update(keys)
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(UserError) as info:
        parse_run_params(raw)
    return info.value.line()


def test_convergence_section_parses_one_or_a_list(example_param):
    p = parse_run_params(with_keys(example_param, convergence={"type": "fixed-levels"}))
    assert p.convergence == (FixedLevels(0.9),)
    p = parse_run_params(with_keys(example_param, validation_data_sys=["v"], convergence=[
        {"type": "fixed-levels", "conv_accuracy": 0.95}, {"type": "validation", "force_rmse": 0.1}]))
    assert p.convergence == (FixedLevels(0.95), HeldOut(force_rmse=0.1))
    assert p.effective()["convergence"][1] == {"type": "validation", "force_rmse": 0.1, "energy_rmse": None,
                                               "of": "mean"}


@pytest.mark.parametrize("section,expected", [
    ({"type": "fixed-level"}, "unknown convergence type 'fixed-level' at param.json: convergence.type: "
                              "did you mean 'fixed-levels'?"),
    ({"type": "fixed-levels", "conv_acuracy": 0.9},
     "unknown key 'conv_acuracy' at param.json: convergence.conv_acuracy: did you mean 'conv_accuracy'?"),
    ({"conv_accuracy": 0.9}, "missing 'type' at param.json: convergence"),
    ({"type": "fixed-levels", "conv_accuracy": 1.5}, "got 1.5 at param.json: convergence.conv_accuracy"),
    ([{"type": "validation", "force_rmse": 0.1}], "convergence type 'validation' needs validation_data_sys"),
    ([{"type": "adaptive-lower"}], "convergence type 'adaptive-lower' needs model_devi_adapt_trust_lo"),
    ([{"type": "adaptive-lower", "n_checked_steps": 1}],
     "got 1 at param.json: convergence[0].n_checked_steps"),
    ([], "empty list at param.json: convergence"),
    ([{"type": "fixed-levels"}, {"type": "fixed-levels"}], "a convergence type given twice"),
])
def test_convergence_errors_are_one_line(example_param, section, expected, tmp_path):
    from dpgen_ng.config.param import load_run_params
    from tests.conftest import write_json

    path = write_json(tmp_path / "param.json", with_keys(example_param, convergence=section))
    with pytest.raises(UserError) as info:
        load_run_params(path)
    assert expected in info.value.line()
    assert "\n" not in info.value.line()


def test_validation_without_threshold_and_keys_that_need_others(example_param):
    assert "no threshold" in error_of(with_keys(example_param, validation_data_sys=["v"],
                                                convergence={"type": "validation"}))
    raw = with_keys(example_param, convergence={"type": "fixed-levels"}, model_devi_adapt_trust_lo=True)
    assert "fixed-levels judges the accurate ratio" in error_of(raw)
    raw = with_keys(example_param, model_devi_numb_candi_f=20)
    assert "'model_devi_numb_candi_f' has no effect without model_devi_adapt_trust_lo" in error_of(raw)
    raw = copy.deepcopy(example_param)
    raw["model_devi_jobs"][0]["max_iter"] = 3
    assert "max_iter without a convergence section at model_devi_jobs[0].max_iter" in error_of(raw)
    raw["convergence"] = {"type": "fixed-levels"}
    raw["model_devi_jobs"][1]["fatal_at_max"] = False
    assert "'fatal_at_max' without max_iter at model_devi_jobs[1].fatal_at_max" in error_of(raw)


def test_adaptive_keys_and_defaults(example_param):
    p = parse_run_params(with_keys(example_param, model_devi_adapt_trust_lo=True, model_devi_perc_candi_f=5))
    assert p.adaptive == AdaptiveTrust(numb_f=10, perc_f=5.0, numb_v=0, perc_v=0.0)
    assert parse_run_params(example_param).adaptive is None


# ----- adaptive trust_lo ------------------------------------------------------------------------


def test_classify_adaptive_top_n_below_hi_sets_trust_lo():
    f = np.array([0.01, 0.02, 0.2, 0.03, np.nan, 0.04, 0.12, 0.05])
    codes, trust = classify_adaptive(f, np.zeros_like(f), np.arange(f.size), 0.15, None,
                                     AdaptiveTrust(numb_f=3))
    # 0.2 ≥ hi and NaN fail; the 3 highest of the rest (0.12, 0.05, 0.04) are candidates
    assert codes.tolist() == [ACCURATE, ACCURATE, FAILED, ACCURATE, FAILED, CANDIDATE, CANDIDATE, CANDIDATE]
    assert trust.f_lo == 0.04 and trust.f_hi == 0.15 and trust.v_lo is None


def test_classify_adaptive_percent_ties_and_input_order():
    f = np.repeat([0.1, 0.02], 50)  # 50 frames tie at 0.1
    order = np.arange(100)
    codes, trust = classify_adaptive(f, np.zeros(100), order, 1.0, None, AdaptiveTrust(numb_f=1, perc_f=10))
    assert (codes == CANDIDATE).sum() == 10 and trust.f_lo == 0.1
    assert np.flatnonzero(codes == CANDIDATE).tolist() == list(range(40, 50))  # ties: highest order wins
    perm = np.random.default_rng(0).permutation(100)
    codes2, _ = classify_adaptive(f[perm], np.zeros(100), order[perm], 1.0, None,
                                  AdaptiveTrust(numb_f=1, perc_f=10))
    assert sorted(order[perm][codes2 == CANDIDATE]) == list(range(40, 50))


def test_classify_adaptive_empty_all_failed_and_virial():
    codes, trust = classify_adaptive(np.zeros(0), np.zeros(0), np.zeros(0, int), 0.15, None, AdaptiveTrust())
    assert codes.size == 0 and trust.f_lo == 0.15  # nothing below hi: trust_lo is trust_hi, as in DP-GEN
    codes, trust = classify_adaptive(np.array([1.0, np.inf]), np.zeros(2), np.arange(2), 0.15, None,
                                     AdaptiveTrust())
    assert codes.tolist() == [FAILED, FAILED] and trust.f_lo == 0.15
    f = np.array([0.01, 0.02, 0.03, 0.04])
    v = np.array([0.9, 0.1, 0.2, 5.0])
    codes, trust = classify_adaptive(f, v, np.arange(4), 0.15, 1.0, AdaptiveTrust(numb_f=1, numb_v=1))
    # frame 3 fails on the virial; the top force (0.03) and the top virial (0.9) are candidates
    assert codes.tolist() == [CANDIDATE, ACCURATE, CANDIDATE, FAILED]
    assert trust.f_lo == 0.03 and trust.v_lo == 0.9


# ----- schedule and stop rule -------------------------------------------------------------------


def params(example_param, jobs_extra=(), convergence=None, **keys):
    raw = copy.deepcopy(example_param)
    for job, extra in zip(raw["model_devi_jobs"], jobs_extra):
        job.update(extra)
    if convergence is not None:
        raw["convergence"] = convergence
    raw.update(keys)
    return parse_run_params(raw)


def test_without_max_iter_each_job_runs_once_as_in_dpgen(example_param):
    p = params(example_param)
    assert next_slot(p, None, 0) == Slot(0, 0, 2000)
    assert next_slot(p, summary(0, job=0), 1) == Slot(1, 0, 2000)
    assert next_slot(p, summary(2, job=2), 3) is None
    assert next_slot(p, None, 2) == Slot(2, 0, 2000)  # a work dir from before summaries
    assert after_iteration(p, summary(2, job=2)) is None  # final models are trained next
    stop = exhausted(p, summary(2, job=2), 3)
    assert stop.kind == "finished" and stop.exit_code == 0
    assert stop.text == "finished: all 3 model_devi_jobs explored; final models in iter.000003/00.train"


def test_max_iter_repeats_until_converged_then_moves_on(example_param):
    p = params(example_param, [{"max_iter": 3, "fatal_at_max": False}, {"max_iter": 2}],
               convergence={"type": "fixed-levels"})
    assert next_slot(p, summary(0, job=0, converged=False), 1) == Slot(0, 1, 2000)
    assert next_slot(p, summary(1, job=0, repeat=1, converged=True), 2) == Slot(1, 0, 2000)
    # at max_iter without converging: not fatal for job 0, the next job starts
    at_max = summary(2, job=0, repeat=2, converged=False)
    assert after_iteration(p, at_max) is None and next_slot(p, at_max, 3) == Slot(1, 0, 2000)
    # job 1 is fatal at max_iter (the default)
    stop = after_iteration(p, summary(4, job=1, repeat=1, converged=False))
    assert stop.kind == "max_iter" and stop.exit_code == 1
    assert "model_devi_jobs[1] reached max_iter 2 in iteration 4 without converging" in stop.text
    # converged in the last job: stop now, with the committee that met the criteria
    stop = after_iteration(p, summary(6, job=2, converged=True))
    assert stop.kind == "converged" and stop.iteration == 6 and stop.exit_code == 0
    assert "final models in iter.000006/00.train" in stop.text
    # converged in a job that is not the last: the next job runs
    assert after_iteration(p, summary(3, job=1, converged=True)) is None


def test_not_converged_after_the_last_job_says_so(example_param):
    p = params(example_param, convergence={"type": "fixed-levels"})
    verdicts = judge(p.convergence, summary(2), [])[0]
    last = dataclasses.replace(summary(2, job=2, converged=False), verdicts=verdicts)
    stop = exhausted(p, last, 3)
    assert stop.kind == "not_converged" and stop.exit_code == 0
    assert stop.text.startswith("not converged after the last job (last explored in iteration 2): "
                                "fixed-levels: accurate 90.0 % ≥ 90.0 %")


def test_grow_nsteps_after_a_mostly_accurate_repeat(example_param):
    p = params(example_param, [{"max_iter": 5, "grow_nsteps": {"factor": 2, "max_factor": 4}}],
               convergence={"type": "fixed-levels", "conv_accuracy": 0.99})
    accurate = summary(0, systems={"000": system(85, 15, 0)}, converged=False, nsteps=2000)
    assert next_slot(p, accurate, 1).nsteps == 4000
    grown = dataclasses.replace(accurate, iteration=1, repeat=1, nsteps=4000)
    assert next_slot(p, grown, 2).nsteps == 8000
    capped = dataclasses.replace(accurate, iteration=2, repeat=2, nsteps=8000)
    assert next_slot(p, capped, 3).nsteps == 8000  # max_factor 4
    poor = summary(0, systems={"000": system(50, 50, 0)}, converged=False, nsteps=4000)
    assert next_slot(p, poor, 1).nsteps == 4000


# ----- figures ------------------------------------------------------------------------------------


def test_validation_figures_rmse_per_model_and_mean():
    sys5 = {"natoms": 5, "nframes": 2, "f_sse": [[15.0, 15.0], [60.0, 60.0]], "mean_f_sse": [0.0, 30.0],
            "e_err": [[0.5, -0.5], [1.0, 1.0]], "mean_e_err": [0.75, 0.25]}
    v = validation_figures([sys5], 2)
    assert v.nframes == 2
    assert v.models[0].force == pytest.approx(1.0)  # sqrt(30 / (2 frames × 5 atoms × 3))
    assert v.models[1].force == pytest.approx(2.0)
    assert v.models[0].energy == pytest.approx(0.1)  # 0.5 eV over 5 atoms
    assert v.mean.force == pytest.approx(np.sqrt(30 / 30))
    assert v.mean.virial is None and v.worst("force") == pytest.approx(2.0)


def test_calibration_figures_rank_correlation_and_bins():
    devi = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08])
    cal = calibration_figures(devi, 3 * devi)
    assert cal.spearman == pytest.approx(1.0) and cal.error_over_devi == pytest.approx(3.0)
    assert [b.n for b in cal.bins] == [2, 2, 2, 2]
    assert cal.bins[0].mean_error == pytest.approx(0.045) and cal.bins[-1].hi == 0.08
    anti = calibration_figures(devi, devi[::-1])
    assert anti.spearman == pytest.approx(-1.0)
    small = calibration_figures(np.array([0.1, np.nan]), np.array([0.2, 0.3]))
    assert small.nframes == 1 and small.spearman is None


# ----- iteration-0 gate -----------------------------------------------------------------------


def test_lcurve_and_fit_warning(tmp_path):
    lc = tmp_path / "lcurve.out"
    lc.write_text("# step       rmse_trn    rmse_e_trn    rmse_f_trn   lr\n"
                  "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"
                  "      0  1.0e+01  1.0e+00  9.0e-01  1.0e-03\n"
                  "    100  2.0e+00  1.0e-01  4.0e-01  1.0e-04\n"
                  "    200  2.0e+00  1.0e-01  2.0e-01  1.0e-05\n")
    assert read_lcurve(lc, last=2)["rmse_f_trn"] == pytest.approx(0.3)
    report = fit_report([lc, lc], 0, f_hi=0.15)
    assert len(report["warnings"]) == 1 and "force RMSE of 0.5 eV/Å" in report["warnings"][0]
    assert fit_report([lc], 0, f_hi=1.0)["warnings"] == []
    assert fit_report([lc], 1, f_hi=0.15)["warnings"] == []  # only the first training is gated
    assert fit_report([tmp_path / "missing"], 0, f_hi=0.15)["warnings"] == []


def test_exploration_warning_at_iteration_0_only():
    def counts(failed: int, total: int) -> dict:
        return {"000": {"failed": failed, "total": total, "trust": {"f_hi": 0.15}}}

    devi = np.array([1.0, 2.0, 3.0])
    text = exploration_warning(0, counts(80, 100), devi)
    assert "80.0 % of the explored frames failed" in text and "median 2 eV/Å" in text
    assert exploration_warning(0, counts(20, 100), devi) is None
    assert exploration_warning(1, counts(80, 100), devi) is None
    assert exploration_warning(0, {}, np.zeros(0)) is None


def test_summary_round_trip(tmp_path):
    val = Validation(5, (errors(0.1, 0.01),), errors(0.1, 0.01))
    s = dataclasses.replace(summary(3, job=1, repeat=2, val=val), converged=True,
                            calibration=calibration_figures(np.arange(1, 6) / 10, np.arange(1, 6) / 5))
    (tmp_path / "iter.000003").mkdir()
    write_summary(tmp_path, s)
    assert read_summary(tmp_path, 3) == s
    assert from_json(s.as_json()) == s
    assert read_summary(tmp_path, 4) is None


def test_descriptor_sels_explicit_only():
    from dpgen_ng.train.gate import descriptor_sels

    where = "d"
    assert list(descriptor_sels({"type": "se_e2_a", "sel": [4, 4], "rcut": 6.0}, where)) == \
        [("d.sel", 6.0, [4, 4], False)]
    assert list(descriptor_sels({"type": "se_e2_a", "sel": "auto", "rcut": 6.0}, where)) == []
    hybrid = {"type": "hybrid", "list": [{"type": "se_atten", "sel": 30, "rcut": 5.0},
                                         {"type": "se_e2_r", "sel": [2, 3], "rcut": 3.0}]}
    assert list(descriptor_sels(hybrid, where)) == [("d.list[0].sel", 5.0, 30, True),
                                                     ("d.list[1].sel", 3.0, [2, 3], False)]
    assert list(descriptor_sels({"type": "dpa2", "repinit": {}}, where)) == []
