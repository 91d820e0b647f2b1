"""The DeePMD-kit trainer: ``input.json`` for model k, each backend's commands and file names."""

from __future__ import annotations

import copy
import json
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dpgen_ng.config.machine import StageMachine, runs_here
from dpgen_ng.dispatch.progress import Watch
from dpgen_ng.rng import draw_seed

INPUT = "input.json"
LOG = "train.log"
RESUMED = "resumed_from"  # one line per restart from a checkpoint: the checkpoint's file name
CKPT = "model.ckpt"


@dataclass(frozen=True)
class Backend:
    """What differs between DeePMD-kit's backends for training, freezing and running a model."""

    name: str  # DP-GEN's train_backend value
    flag: str  # dp's backend switch
    suffix: str  # frozen model
    ckpt_files: tuple[str, ...]  # the checkpoint ``model.ckpt`` as files (the first is probed)
    finetune_suffix: str  # what --finetune reads: a frozen model (TF) or a checkpoint (PyTorch)
    doc_name: str  # the name DeePMD-kit's argument docs give it ("Supported Backend: …")
    # train and freeze may share one process (dpgen_ng.train.session). Not with PyTorch: its freeze
    # scripts the model with TorchScript, which fails in the process that trained DPA-3 (SiLUT)
    one_process: bool = False

    @property
    def model(self) -> str:
        return f"frozen_model{self.suffix}"

    @property
    def compressed(self) -> str:
        return f"frozen_model_compressed{self.suffix}"

    def graph(self, k: int) -> str:
        """The committee member's name under 00.train and 01.model_devi."""
        return f"graph.{k:03d}{self.suffix}"

    def backward(self, compress: bool) -> tuple[str, ...]:
        models = (self.model, self.compressed) if compress else (self.model,)
        return (*models, "lcurve.out", "checkpoint", *self.ckpt_files, RESUMED)


BACKENDS: dict[str, Backend] = {
    "tensorflow": Backend("tensorflow", "--tf", ".pb",
                          (f"{CKPT}.index", f"{CKPT}.meta", f"{CKPT}.data-00000-of-00001"), ".pb",
                          "TensorFlow", one_process=True),
    "pytorch": Backend("pytorch", "--pt", ".pth", (f"{CKPT}.pt",), ".pt", "PyTorch"),
}


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


def apply_activation(jinput: dict[str, Any], pair: tuple[str, str]) -> None:
    """DP-GEN's ``model_devi_activation_func`` for one model: the descriptor's and the fitting
    net's activation functions."""
    model = jinput["model"]
    model.setdefault("descriptor", {})["activation_function"] = pair[0]
    model.setdefault("fitting_net", {})["activation_function"] = pair[1]


def command(dp: str, backend: Backend, init_flag: str = "", compress: bool = False,
            from_scratch: bool = False, session: str | None = None,
            skip_neighbor_stat: bool = False) -> str:
    """Train, then freeze (then compress). A task run again after its job was killed continues
    from the checkpoint the killed attempt left (``dp train --restart``, DP-GEN's behaviour) and
    notes that checkpoint in ``resumed_from``; with ``from_scratch`` it starts over instead, which
    reproduces the uninterrupted model exactly (DeePMD-kit does not restore its data-sampling
    state on a restart). With ``session`` (shell words that start a Python with DeePMD-kit and
    dpgen_ng, see :func:`session_python`), the steps run in one process
    (:mod:`dpgen_ng.train.session`) instead of one ``dp`` each."""

    def run(*steps: str) -> str:
        if session is not None:
            quoted = " ".join(shlex.quote(s) for s in steps)
            return f"{session} -m dpgen_ng.train.session {backend.flag} {quoted}"
        return " && ".join(f"{dp} {backend.flag} {s}" for s in steps)

    skip = " --skip-neighbor-stat" if skip_neighbor_stat else ""
    after = [f"freeze -o {backend.model}"]
    if compress:  # without the statistics in the model, compress computes them from the input's data
        after.append(f"compress -i {backend.model} -o {backend.compressed}"
                     + (f" -t {INPUT}" if skip_neighbor_stat else ""))
    fresh = f": > {RESUMED}; {run(f'train {INPUT}{init_flag}{skip}', *after)}"
    if from_scratch:
        return f"rm -f {CKPT}* checkpoint lcurve.out; {fresh}"
    probe = backend.ckpt_files[0]
    return (f"if [ -f {probe} ]; then basename \"$(readlink {probe} || echo {probe})\" >> {RESUMED}; "
            f"{run(f'train {INPUT} --restart {CKPT}{skip}', *after)}; else {fresh}; fi")


def task_command(stage: StageMachine, backend: Backend, init_flag: str, compress: bool,
                 from_scratch: bool, skip_neighbor_stat: bool = False) -> str:
    """The shell command of a training task on the train stage's machine."""
    session = session_python(stage.command, runs_here(stage.machine)) if backend.one_process else None
    return command(stage.command, backend, init_flag, compress, from_scratch, session=session,
                   skip_neighbor_stat=skip_neighbor_stat)


# launchers that start several copies of the command: each step keeps its own dp under them
LAUNCHERS = frozenset({"mpirun", "mpiexec", "srun", "horovodrun", "aprun", "jsrun", "ibrun"})


def session_python(dp: str, runs_here: bool) -> str | None:
    """The shell words that run a training task's steps in one process, or None. They are our
    Python when the stage runs here and its command ends with the ``dp`` beside it (the venv's);
    a wrapper in front of that ``dp`` (``nice``, ``env X=1``, a logging script) stays in front of
    the Python. Under a parallel launcher (``mpirun``, ``srun``…) each step keeps its own ``dp``."""
    try:
        words = shlex.split(dp)
    except ValueError:
        return None
    if not runs_here or not words or any(Path(w).name in LAUNCHERS for w in words[:-1]):
        return None
    found = shutil.which(words[-1])
    if found is None or Path(found).parent.resolve() != Path(sys.executable).parent.resolve():
        return None
    return shlex.join([*words[:-1], sys.executable])


def resumed_steps(task_dir: Path) -> list[int]:
    """The steps of the checkpoints a training task was restarted from (none: it ran in one go)."""
    try:
        lines = (Path(task_dir) / RESUMED).read_text().split()
    except OSError:
        return []
    steps = []
    for name in lines:
        stem = name.split(".ckpt-", 1)[-1].split(".", 1)[0] if ".ckpt-" in name else ""
        steps.append(int(stem) if stem.isdigit() else -1)
    return steps


def watch(task_dir: Path) -> Watch | None:
    """lcurve.out against the input's numb_steps (``stop_batch`` in older inputs)."""
    try:
        training = json.loads((Path(task_dir) / INPUT).read_text())["training"]
        steps = int(training.get("numb_steps", training.get("stop_batch")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Watch(training.get("disp_file", "lcurve.out"), steps)
