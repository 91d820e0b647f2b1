"""DeePMD-kit work done in a child process, so the long-lived ``dpgen`` process never loads
TensorFlow: ``python -m dpgen_ng.train.worker REQUEST.json RESULT.json``.

Tasks (``request["task"]``):
- ``predict``: every model on every frame of deepmd/npy systems; per frame, each model's energy
  error and sum of squared force / virial errors, the same for the committee mean, and DeePMD-kit's
  max force deviation of the committee and its max RMS error against the labels (both from
  ``deepmd.infer.model_devi.calc_model_devi_f``).
- ``fingerprints``: one vector per frame for the ``fp_pick`` strategies: DeePMD-kit's per-atom
  descriptor (``DeepPot.eval_descriptor``) averaged over the atoms of each element, the elements'
  means side by side; frames come in an ``.npz`` (``G.coords``, ``G.cells``, ``G.types`` per group
  ``G``) and go out in another (``G``: shape (frames, elements × descriptor size)).
- ``neighbors``: DeePMD-kit's neighbour statistics (max neighbours per type within rcut) of
  groups of deepmd/npy systems, with its NumPy implementation (no TensorFlow start-up).
The parent (``train/evaluate.py``) turns these raw figures into RMSEs and calibration figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 256  # frames per model call


def _labeled(path: str, type_map: list[str]):  # noqa: ANN202 - dpdata.LabeledSystem
    import dpdata

    return dpdata.LabeledSystem(path, fmt="deepmd/npy", type_map=type_map)


def _predict_system(models: list[Any], path: str, type_map: list[str]) -> dict[str, Any]:
    from deepmd.infer.model_devi import calc_model_devi_f

    s = _labeled(path, type_map)
    nf, na = s.get_nframes(), s.get_natoms()
    coords = s["coords"].reshape(nf, -1)
    cells = None if s.nopbc else s["cells"].reshape(nf, 9)
    types = s["atom_types"].tolist()
    es, fs, vs = [], [], []
    for m in models:
        e_m, f_m, v_m = [], [], []
        for a in range(0, nf, CHUNK):
            e, f, v = m.eval(coords[a:a + CHUNK], None if cells is None else cells[a:a + CHUNK], types)
            e_m.append(np.reshape(e, (-1,)))
            f_m.append(np.reshape(f, (-1, na, 3)))
            v_m.append(np.reshape(v, (-1, 9)))
        es.append(np.concatenate(e_m))
        fs.append(np.concatenate(f_m))
        vs.append(np.concatenate(v_m))
    e_pred, f_pred, v_pred = np.array(es), np.array(fs), np.array(vs)
    real_f = s["forces"]
    out: dict[str, Any] = {"path": path, "natoms": na, "nframes": nf}
    sq = np.square(f_pred - real_f).sum(axis=(2, 3))
    out["f_sse"] = sq.tolist()
    out["mean_f_sse"] = np.square(f_pred.mean(axis=0) - real_f).sum(axis=(1, 2)).tolist()
    if "energies" in s.data:
        out["e_err"] = (e_pred - s["energies"]).tolist()
        out["mean_e_err"] = (e_pred.mean(axis=0) - s["energies"]).tolist()
    if "virials" in s.data:
        real_v = s["virials"].reshape(nf, 9)
        out["v_sse"] = np.square(v_pred - real_v).sum(axis=2).tolist()
        out["mean_v_sse"] = np.square(v_pred.mean(axis=0) - real_v).sum(axis=1).tolist()
    out["devi_f"] = calc_model_devi_f(f_pred)[0].tolist()
    out["error_f"] = calc_model_devi_f(f_pred, real_f)[0].tolist()
    return out


def predict(request: dict[str, Any]) -> dict[str, Any]:
    from deepmd.infer import DeepPot

    models = [DeepPot(m) for m in request["models"]]
    type_map = request["type_map"]
    return {"groups": {name: [_predict_system(models, p, type_map) for p in paths]
                       for name, paths in request["groups"].items()}}


def neighbors(request: dict[str, Any]) -> dict[str, Any]:
    from deepmd.dpmodel.utils.neighbor_stat import NeighborStat
    from deepmd.utils.data_system import DeepmdDataSystem

    out = {}
    for name, paths in request["groups"].items():
        if not paths:
            continue
        data = DeepmdDataSystem(systems=paths, batch_size=1, test_size=1, rcut=request["rcut"],
                                type_map=request["type_map"])
        ntypes = len(request["type_map"])
        stat = NeighborStat(ntypes, request["rcut"], mixed_type=request.get("mixed_type", False))
        min_dist, max_size = stat.get_stat(data)
        out[name] = {"min_nbor_dist": float(min_dist), "max_nbor_size": [int(x) for x in max_size]}
    return {"groups": out}


def _element_means(desc: np.ndarray, types: np.ndarray, ntypes: int) -> np.ndarray:
    """(frames, atoms, d) descriptors → (frames, ntypes × d): the mean over each element's atoms
    (zeros for an element the frame does not have)."""
    out = np.zeros((desc.shape[0], ntypes, desc.shape[2]))
    for t in range(ntypes):
        here = types == t
        if here.any():
            out[:, t] = desc[:, here].mean(axis=1)
    return out.reshape(desc.shape[0], -1)


def fingerprints(request: dict[str, Any]) -> dict[str, Any]:
    from deepmd.infer import DeepPot

    model = DeepPot(request["model"])
    ntypes = len(request["type_map"])
    out = {}
    with np.load(request["frames"]) as data:
        for name in request["groups"]:
            coords, cells, types = data[f"{name}.coords"], data[f"{name}.cells"], data[f"{name}.types"]
            nf = coords.shape[0]
            parts = []
            for a in range(0, nf, CHUNK):
                c = coords[a:a + CHUNK].reshape(-1, types.size * 3)
                box = cells[a:a + CHUNK].reshape(-1, 9) if cells.size else None
                desc = model.eval_descriptor(c, box, types.tolist())
                parts.append(_element_means(np.reshape(desc, (c.shape[0], types.size, -1)), types, ntypes))
            out[name] = np.concatenate(parts) if parts else np.zeros((0, 0))
    tmp = request["out"] + ".tmp.npz"
    np.savez(tmp, **out)
    Path(tmp).replace(request["out"])
    return {"groups": sorted(out)}


TASKS = {"predict": predict, "neighbors": neighbors, "fingerprints": fingerprints}


def main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    request = json.loads(Path(argv[0]).read_text())
    result = TASKS[request["task"]](request)
    tmp = Path(argv[1] + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
