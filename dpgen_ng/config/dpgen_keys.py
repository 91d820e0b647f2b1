"""Every key of DP-GEN's param files and what dpgen_ng does with it; ``python -m
dpgen_ng.config.dpgen_keys`` writes the table of docs/dpgen-keys.md.

The key names are DP-GEN's own (its argument schemas: dpgen/generator/arginfo.py and
dpgen/data/arginfo.py, DP-GEN 0.14), plus keys its code reads that the schemas do not list.
"""

from __future__ import annotations

from collections.abc import Callable

from dpgen_ng.config import init, jobs, param, simplify

_AMBER = ("cutoff", "disang", "disang_prefix", "high_level", "low_level", "mdin", "mdin_prefix", "nsteps",
          "parm7", "parm7_prefix", "qm_charge", "qm_region", "r")
RUN_KEYS = tuple(sorted({
    "cluster_cutoff", "cluster_cutoff_hard", "cluster_minify", "cvasp", "default_training_param",
    "detailed_report_make_fp", "dp_compress", "dp_train_skip_neighbor_stat", "epsilon", "epsilon_v",
    "external_input_path", "fp_accurate_soft_threshold", "fp_accurate_threshold", "fp_aniso_kspacing",
    "fp_cluster_vacuum", "fp_dpks_descriptor", "fp_incar", "fp_kpt_file", "fp_orb_files", "fp_params",
    "fp_pp_files", "fp_pp_path", "fp_skip_bad_box", "fp_style", "fp_task_max", "fp_task_min",
    "init_batch_size", "init_data_prefix", "init_data_sys", "k_points", "lmp_d3", "lmp_neigh_modify_one",
    "mass_map", "mlp_engine", "model_devi_activation_func", "model_devi_adapt_trust_lo",
    "model_devi_clean_traj", "model_devi_dt", "model_devi_e_trust_hi", "model_devi_e_trust_lo",
    "model_devi_engine", "model_devi_f_avg_relative", "model_devi_f_trust_hi", "model_devi_f_trust_lo",
    "model_devi_jobs", "model_devi_merge_traj", "model_devi_nopbc", "model_devi_numb_candi_f",
    "model_devi_numb_candi_v", "model_devi_perc_candi_f", "model_devi_perc_candi_v", "model_devi_plumed",
    "model_devi_plumed_path", "model_devi_skip", "model_devi_v_trust_hi", "model_devi_v_trust_lo",
    "numb_models", "one_h5", "ratio_failed", "shuffle_poscar", "srtab_file_path", "sys_batch_size",
    "sys_configs", "sys_configs_prefix", "sys_format", "train_backend", "training_finetune_model",
    "training_init_frozen_model", "training_init_model", "training_iter0_model_path",
    "training_reuse_decay_steps", "training_reuse_iter", "training_reuse_numb_steps",
    "training_reuse_old_ratio", "training_reuse_start_lr", "training_reuse_start_pref_e",
    "training_reuse_start_pref_f", "training_reuse_stop_batch", "type_map", "use_clusters", "use_ele_temp",
    "use_relative", "use_relative_v", "user_fp_params", *_AMBER}))
JOB_KEYS = ("ensemble", "model_devi_f_trust_hi", "model_devi_f_trust_lo", "model_devi_v_trust_hi",
            "model_devi_v_trust_lo", "nbeads", "neidelay", "nsteps", "press", "rev_mat", "sys_idx",
            "sys_rev_mat", "taup", "taut", "template", "temps", "trj_freq")
INIT_BULK_KEYS = ("atom_masses", "cell_type", "coll_ndata", "elements", "from_poscar", "from_poscar_path",
                  "init_fp_style", "latt", "md_incar", "md_kpt", "md_nstep", "pert_atom", "pert_box",
                  "pert_numb", "potcars", "relax_incar", "relax_kpt", "scale", "skip_relax", "stages",
                  "super_cell", "type_map")

SIMPLIFY_KEYS = (
    "cluster_cutoff", "cluster_cutoff_hard", "cluster_minify", "cvasp", "default_training_param",
    "dp_compress", "dp_train_skip_neighbor_stat", "external_input_path", "fp_accurate_soft_threshold",
    "fp_accurate_threshold", "fp_aniso_kspacing", "fp_dpks_descriptor", "fp_incar", "fp_kpt_file",
    "fp_orb_files", "fp_params", "fp_pp_files", "fp_pp_path", "fp_skip_bad_box", "fp_style", "fp_task_max",
    "fp_task_min", "init_batch_size", "init_data_prefix", "init_data_sys", "init_pick_number",
    "iter_pick_number", "k_points", "labeled", "mass_map", "mlp_engine", "model_devi_activation_func",
    "model_devi_e_trust_hi", "model_devi_e_trust_lo", "model_devi_f_trust_hi", "model_devi_f_trust_lo",
    "numb_models", "one_h5", "pick_data", "ratio_failed", "srtab_file_path", "stop_iter", "sys_batch_size",
    "sys_configs", "sys_configs_prefix", "sys_format", "train_backend", "training_finetune_model",
    "training_init_frozen_model", "training_init_model", "training_iter0_model_path", "training_reuse_iter",
    "training_reuse_numb_steps", "training_reuse_old_ratio", "training_reuse_start_lr",
    "training_reuse_start_pref_e", "training_reuse_start_pref_f", "true_error_e_trust_hi",
    "true_error_e_trust_lo", "true_error_f_trust_hi", "true_error_f_trust_lo", "type_map", "use_clusters",
    "use_ele_temp", "user_fp_params",
)

SECTIONS: tuple[tuple[str, tuple[str, ...], Callable[[], dict[str, str]]], ...] = (
    ("run param (`dpgen run`)", RUN_KEYS, param.key_statuses),
    ("`model_devi_jobs` entries", JOB_KEYS, jobs.key_statuses),
    ("init_bulk param (`dpgen init_bulk`)", INIT_BULK_KEYS, init.key_statuses),
    ("simplify param (`dpgen simplify`)", SIMPLIFY_KEYS, simplify.key_statuses),
)
UNKNOWN = "UNKNOWN"


def statuses() -> dict[str, dict[str, str]]:
    """{section: {DP-GEN key: what happens to it here}}; UNKNOWN where nothing recognises it."""
    out = {}
    for title, keys, status in SECTIONS:
        known = status()
        out[title] = {key: known.get(key, UNKNOWN) for key in keys}
    return out


def markdown() -> str:
    lines = ["# Every DP-GEN key and what dpgen_ng does with it", "",
             "Made by `python -m dpgen_ng.config.dpgen_keys` from the parsers themselves (a test checks "
             "that this file is current and that no DP-GEN key is unknown). *refused* keys get a one-line "
             "error saying why; nothing is silently ignored. init_surf keys: docs/init_surf.md; `dpgen test` "
             "keys: docs/test.md.", ""]
    for title, table in statuses().items():
        lines += [f"## {title}", "", "| key | here |", "|---|---|"]
        lines += [f"| `{key}` | {text.replace('|', '/')} |" for key, text in table.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
