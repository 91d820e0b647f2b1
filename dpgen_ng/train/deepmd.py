"""The DeePMD-kit trainer (TensorFlow backend): ``input.json`` for model k, commands, model file."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.dispatch.progress import Watch
from dpgen_ng.rng import draw_seed

INPUT = "input.json"
MODEL = "frozen_model.pb"
LOG = "train.log"
BACKWARD = (MODEL, "lcurve.out", "checkpoint", "model.ckpt.index", "model.ckpt.meta",
            "model.ckpt.data-00000-of-00001")


def _seed_descriptor(desc: dict[str, Any], rng: np.random.Generator) -> None:
    if desc.get("type") == "hybrid":
        for sub in desc.get("list", []):
            _seed_descriptor(sub, rng)
    elif desc.get("type") != "loc_frame":
        desc["seed"] = draw_seed(rng)


def training_input(
    base: dict[str, Any],
    type_map: tuple[str, ...],
    systems: list[str],
    batch_sizes: list[int],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A complete DeePMD-kit v2/v3 input for one committee member; ``base`` is not modified."""
    jinput = copy.deepcopy(base)
    model = jinput["model"]
    model["type_map"] = list(type_map)
    if "descriptor" in model:
        _seed_descriptor(model["descriptor"], rng)
    if "fitting_net" in model:
        model["fitting_net"]["seed"] = draw_seed(rng)
    if "type_embedding" in model:
        model["type_embedding"]["seed"] = draw_seed(rng)
    training = jinput["training"]
    training["seed"] = draw_seed(rng)
    for old in ("systems", "batch_size", "set_prefix"):
        training.pop(old, None)
    data = training.setdefault("training_data", {})
    data["systems"] = list(systems)
    data["batch_size"] = list(batch_sizes)
    training.setdefault("disp_file", "lcurve.out")
    return jinput


def command(dp: str) -> str:
    """Train (restarting from a checkpoint left by an interrupted attempt), then freeze."""
    return (
        f"if [ -f model.ckpt.index ]; then {dp} --tf train --restart model.ckpt {INPUT}; "
        f"else {dp} --tf train {INPUT}; fi && {dp} --tf freeze -o {MODEL}"
    )


def watch(task_dir: Path) -> Watch | None:
    """lcurve.out against the input's numb_steps (``stop_batch`` in older inputs)."""
    try:
        training = json.loads((Path(task_dir) / INPUT).read_text())["training"]
        steps = int(training.get("numb_steps", training.get("stop_batch")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Watch(training.get("disp_file", "lcurve.out"), steps)
