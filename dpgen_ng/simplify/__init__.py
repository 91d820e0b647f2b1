"""``dpgen simplify``: DP-GEN's dataset pruning. From a dataset (labeled, or labeled on the way by
an fp engine) pick a random subset, then iterate: train a committee on what is picked, compute its
model deviation on the rest, pick some of the worst-predicted frames, until nothing is left to pick.

Entry points: :func:`load_simplify_params` (the param file), :func:`machine_stages` (the sections
the machine file needs), :func:`run_simplify` (run or resume; returns the exit code).
"""

from dpgen_ng.config.simplify import (
    SimplifyParams,
    load_simplify_params,
    machine_stages,
    parse_simplify_params,
)
from dpgen_ng.simplify.loop import run_simplify

__all__ = ["SimplifyParams", "load_simplify_params", "machine_stages", "parse_simplify_params",
           "run_simplify"]
