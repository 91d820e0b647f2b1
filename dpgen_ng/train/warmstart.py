"""Training from earlier models, with DP-GEN's keys and meaning.

- ``training_init_model``: iteration > 0 starts each model from the previous iteration's
  checkpoint of the same model (``dp train --init-model``); iteration 0 does so from
  ``training_iter0_model_path`` (one directory holding ``model.ckpt*`` per model) when given.
- ``training_init_frozen_model`` (iteration 0): from frozen models (``--init-frz-model``).
- ``training_finetune_model`` (iteration 0): fine-tune given models (``--finetune``): frozen
  ``.pb`` for TensorFlow, a checkpoint ``.pt`` for PyTorch (DeePMD-kit cannot fine-tune a frozen
  ``.pth``, a TorchScript archive).
- ``training_reuse_iter``: from that iteration on, ``training_init_model`` plus a shorter warm
  restart: ``training_reuse_numb_steps`` (alias ``training_reuse_stop_batch``),
  ``training_reuse_start_lr``, ``training_reuse_start_pref_e/_f``, ``training_reuse_decay_steps``
  replace the input's values, and the data of all but the last iteration ("old") are sampled with
  probability ``training_reuse_old_ratio`` (a number, or ``auto[:k]``: old frames / (old frames +
  k × new frames), k = 10 by default), through DeePMD-kit's ``auto_prob``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dpgen_ng.errors import UserError
from dpgen_ng.train.deepmd import CKPT, Backend

# DeePMD-kit can compress these descriptors (dp compress); hybrids of them too
COMPRESSIBLE = {"se_e2_a", "se_a", "se_e2_r", "se_r", "se_e3", "se_at", "se_a_3be", "se_e3_tebd",
                "se_atten", "dpa1", "se_atten_v2"}


@dataclass(frozen=True)
class Reuse:
    start_iter: int
    old_ratio: float | None  # None: auto
    auto_factor: float = 10.0
    numb_steps: int | None = None
    start_lr: float | None = None
    start_pref_e: float | None = None
    start_pref_f: float | None = None
    decay_steps: int | None = None


@dataclass(frozen=True)
class WarmStart:
    init_model: bool = False
    iter0_model_path: tuple[str, ...] = ()
    init_frozen_model: tuple[str, ...] = ()
    finetune_model: tuple[str, ...] = ()
    reuse: Reuse | None = None

    def from_previous(self, iteration: int) -> bool:
        """Whether this iteration's models start from the previous iteration's checkpoints."""
        return iteration > 0 and (self.init_model or self.reusing(iteration))

    def reusing(self, iteration: int) -> bool:
        return self.reuse is not None and iteration >= self.reuse.start_iter

    def as_json(self) -> dict[str, Any]:
        return {"training_init_model": self.init_model,
                "training_iter0_model_path": list(self.iter0_model_path),
                "training_init_frozen_model": list(self.init_frozen_model),
                "training_finetune_model": list(self.finetune_model),
                "training_reuse": None if self.reuse is None else self.reuse.__dict__}


def parse_old_ratio(value: Any, where: str) -> tuple[float | None, float]:
    """``training_reuse_old_ratio``: a probability, "auto" or "auto:k"."""
    if isinstance(value, str) and value.startswith("auto"):
        head, _, k = value.partition(":")
        try:
            factor = float(k) if k else 10.0
        except ValueError:
            factor = -1.0
        if head != "auto" or not factor > 0:
            raise UserError(f"got {value!r}", where, "a number in [0, 1], 'auto' or 'auto:k' with k > 0")
        return None, factor
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise UserError(f"got {value!r}", where, "a number in [0, 1], 'auto' or 'auto:k' with k > 0")
    return float(value), 10.0


def check_combination(w: WarmStart, numb_models: int, backend: Backend,
                      descriptor: dict[str, Any], compress: bool) -> None:
    """What cannot work together, said before anything runs."""
    starts = [k for k, on in (("training_init_model with training_iter0_model_path",
                               bool(w.iter0_model_path) and (w.init_model or (
                                   w.reuse is not None and w.reuse.start_iter == 0))),
                              ("training_init_frozen_model", bool(w.init_frozen_model)),
                              ("training_finetune_model", bool(w.finetune_model))) if on]
    if len(starts) > 1:
        raise UserError(f"{' and '.join(starts)} both say how iteration 0 starts", starts[1],
                        "one way to start iteration 0")
    for key, paths in (("training_init_frozen_model", w.init_frozen_model),
                       ("training_finetune_model", w.finetune_model)):
        if paths and len(paths) != numb_models:
            raise UserError(f"{len(paths)} model(s) for numb_models {numb_models}", key,
                            "one model per committee member")
    bad = [m for m in w.finetune_model if not m.endswith(backend.finetune_suffix)]
    if bad:
        why = ("DeePMD-kit's PyTorch backend fine-tunes from a checkpoint (model.ckpt*.pt); a frozen "
               ".pth is a TorchScript archive it cannot load for training" if backend.name == "pytorch"
               else "the TensorFlow backend fine-tunes from a frozen .pb")
        raise UserError(f"{bad[0]!r}: {why}", "training_finetune_model",
                        f"{backend.finetune_suffix} files for train_backend {backend.name}")
    bad = [m for m in w.init_frozen_model if not m.endswith(backend.suffix)]
    if bad:
        raise UserError(f"{bad[0]!r} is not a {backend.suffix} model", "training_init_frozen_model",
                        f"frozen {backend.suffix} models for train_backend {backend.name}")
    if compress:
        kinds = _descriptor_types(descriptor)
        odd = [k for k in kinds if k not in COMPRESSIBLE]
        if odd or (descriptor.get("type") in ("se_atten", "dpa1", "se_atten_v2")
                   and descriptor.get("attn_layer", 2) != 0):
            what = odd[0] if odd else f"{descriptor.get('type')} with attn_layer > 0"
            raise UserError(f"DeePMD-kit cannot compress a '{what}' descriptor", "dp_compress",
                            "false, or a descriptor dp compress supports (se_e2_a, se_e2_r, se_e3, "
                            "se_atten with attn_layer 0)")


def _descriptor_types(desc: dict[str, Any]) -> list[str]:
    if desc.get("type") == "hybrid":
        return [t for sub in desc.get("list", []) for t in _descriptor_types(sub)]
    return [str(desc.get("type"))]


def _resolve(workdir: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(workdir) / p


def iter0_dirs(workdir: Path, w: WarmStart, numb_models: int) -> list[Path]:
    """``training_iter0_model_path`` globs, expanded and sorted (DP-GEN: one per model)."""
    out: list[Path] = []
    for pattern in w.iter0_model_path:
        out += sorted(Path(p) for p in glob.glob(str(_resolve(workdir, pattern))))
    if len(out) != numb_models:
        raise UserError(f"{len(out)} model dir(s) found for numb_models {numb_models}",
                        "training_iter0_model_path", "one directory with model.ckpt* per model")
    return out


def check_files(workdir: Path, w: WarmStart, numb_models: int, backend: Backend) -> None:
    """The models iteration 0 starts from exist (for ``dpgen check`` and before iteration 0)."""
    if w.iter0_model_path and (w.init_model or (w.reuse is not None and w.reuse.start_iter == 0)):
        for i, d in enumerate(iter0_dirs(workdir, w, numb_models)):
            missing = [f for f in backend.ckpt_files if not (d / f).is_file()]
            if missing:
                raise UserError(f"{d / missing[0]} not found", f"training_iter0_model_path[{i}]",
                                f"a training directory of the {backend.name} backend (with {CKPT}*)")
    for key, paths in (("training_init_frozen_model", w.init_frozen_model),
                       ("training_finetune_model", w.finetune_model)):
        for i, m in enumerate(paths):
            if not _resolve(workdir, m).is_file():
                raise UserError(f"{_resolve(workdir, m)} not found", f"{key}[{i}]", "an existing model file")


def old_ratio(r: Reuse, old_frames: int, new_frames: int) -> float:
    if r.old_ratio is not None:
        return r.old_ratio
    return old_frames / (old_frames + new_frames * r.auto_factor) if old_frames else 0.0


def apply_reuse(jinput: dict[str, Any], r: Reuse, old_range: int, nsys: int, ratio: float) -> None:
    """The warm restart's changes to one model's input (DP-GEN's semantics)."""
    training = jinput["training"]
    if r.numb_steps is not None:
        training["stop_batch" if "stop_batch" in training else "numb_steps"] = r.numb_steps
    if 0 < old_range < nsys:
        training["training_data"]["auto_prob"] = (
            f"prob_sys_size; 0:{old_range}:{ratio:f}; {old_range}:{nsys}:{1.0 - ratio:f}")
    loss = jinput.setdefault("loss", {})
    for key, value in (("start_pref_e", r.start_pref_e), ("start_pref_f", r.start_pref_f)):
        if value is not None and loss.get(key) is not None:
            loss[key] = value
    lr = jinput.setdefault("learning_rate", {})
    if r.start_lr is not None:
        lr["start_lr"] = r.start_lr
    if r.decay_steps is not None:
        lr["decay_steps"] = r.decay_steps
