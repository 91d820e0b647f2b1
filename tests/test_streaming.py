"""Streaming selection (issue 14): ``model_devi.out`` read in blocks of rows, the deviation table
streamed to ``model_devi.npz``, and only the picked frames of a LAMMPS dump read.

Every reader result is compared with the former implementations (copied here as references) on
generated files: the same arrays, dtypes and bytes."""

from __future__ import annotations

import dataclasses
import logging
import warnings
import zipfile
from pathlib import Path

import dpdata
import numpy as np
import pytest

from dpgen_ng.config.param import parse_run_params
from dpgen_ng.explore import lammps
from dpgen_ng.explore.devi import (
    COLUMNS,
    Deviation,
    DeviTable,
    force_over,
    iter_model_devi,
    last_frame_failed,
    read_model_devi,
)
from dpgen_ng.explore.traj import Dump, frame_offsets
from dpgen_ng.explore.trajectories import Trajectories
from dpgen_ng.ledger import Ledger
from dpgen_ng.stages import model_devi
from dpgen_ng.stages.context import IterContext, write_manifest

HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v"
          "         max_devi_f         min_devi_f         avg_devi_f\n")


def old_read_model_devi(path: Path) -> Deviation:
    """The reader before issue 14 (the reference)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else []
    rows = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    data = np.loadtxt(rows, ndmin=2) if rows else np.zeros((0, 0))
    if data.size == 0:
        empty = np.zeros(0)
        return Deviation(empty.astype(int), empty, empty)
    col = {name: i for i, name in enumerate(header)}
    i_step, i_v, i_f = col.get("step", 0), col.get("max_devi_v", 1), col.get("max_devi_f", 4)
    return Deviation(data[:, i_step].astype(np.int64), data[:, i_v], data[:, i_f])


def old_table(tasks: list[tuple[int, int, Deviation]]) -> dict[str, np.ndarray]:
    """The table ``post`` built before issue 14, from (task, sys_idx, deviation) of each task."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    for i, sys_idx, devi in tasks:
        n = len(devi)
        cols["task"].append(np.full(n, i))
        cols["sys_idx"].append(np.full(n, sys_idx))
        cols["row"].append(np.arange(n))
        cols["step"].append(devi.step)
        cols["max_devi_v"].append(devi.max_devi_v)
        cols["max_devi_f"].append(devi.max_devi_f.copy())
    return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}


def assert_same(new: Deviation, old: Deviation) -> None:
    for k in ("step", "max_devi_v", "max_devi_f"):
        a, b = getattr(new, k), getattr(old, k)
        assert a.dtype == b.dtype and a.shape == b.shape, k
        assert a.tobytes() == np.ascontiguousarray(b).tobytes(), k  # bit for bit, NaN included


def deepmd_text(values: np.ndarray, steps: np.ndarray, header: str = HEADER,
                fmt: str = "18.6e") -> str:
    """Rows as the DeePMD pair style writes them (setw(12) step, then `` %18.6e`` columns)."""
    lines = [f"{s:12d}" + "".join(f" {v:{fmt}}" for v in row) + "\n" for s, row in zip(steps, values)]
    return header + "".join(lines)


def random_values(n: int, cols: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, cols)) * 10.0 ** rng.integers(-8, 3, (n, cols))


def both(tmp_path: Path, text: str) -> tuple[Deviation, Deviation]:
    """The new reader and the old one on ``text`` (the new one also in 4 KiB blocks, so that a
    file spans several: the same rows)."""
    p = tmp_path / "model_devi.out"
    p.write_bytes(text.encode())
    new = read_model_devi(p)
    parts = list(iter_model_devi(p, block_bytes=4096))
    assert all(len(part) for part in parts)
    if parts:
        assert_same(Deviation(*(np.concatenate([getattr(x, k) for x in parts])
                                for k in ("step", "max_devi_v", "max_devi_f"))), new)
    return new, old_read_model_devi(p)


def test_deepmd_layout_over_many_blocks_is_bit_for_bit_the_old_reader(tmp_path):
    values = random_values(3000)
    new, old = both(tmp_path, deepmd_text(values, np.arange(3000) * 10))
    assert len(new) == 3000
    assert_same(new, old)


def test_exponents_at_and_past_the_exact_range(tmp_path):
    """|decimal exponent| up to 22 is computed, past it np.loadtxt reads the row: same doubles."""
    mant = np.random.default_rng(1).random((400, 6)) * 9 + 1
    exps = np.repeat(np.arange(-20, 20), 10)[:, None] + np.array([0, -2, -3, 1, 2, 3])
    new, old = both(tmp_path, deepmd_text(mant * 10.0 ** exps, np.arange(400)))
    assert_same(new, old)
    digits = deepmd_text(np.full((5, 6), 2.2250738585072014e-308), np.arange(5), fmt="18.15e")
    assert_same(*both(tmp_path, digits))  # 16 digits: not the fast path


@pytest.mark.parametrize("fmt", ["18.9e", "25.15e", "26.16e", "18.6E", "12.3e", "18.10f"])
def test_other_fixed_widths_as_the_old_reader(tmp_path, fmt):
    rng = np.random.default_rng(7)
    values = rng.random((500, 6)) * 10.0 ** rng.integers(-26, 26, (500, 6))
    assert_same(*both(tmp_path, deepmd_text(values, np.cumsum(rng.integers(0, 1000, 500)), fmt=fmt)))


@pytest.mark.parametrize("text", [
    "",  # empty file
    HEADER,  # header only
    HEADER.rstrip("\n"),  # header only, no newline
    HEADER + "0 1.0e-2 1e-3 2e-3 0.2 0.1 0.15\n",  # one row
    "           0       1.000000e-02       1.0e-03 2e-3 0.2 0.1 0.15\n",  # no header
    "0 1 2 3 4 5 6\n10 1 2 3 7 5 6\n",  # no header, free layout
    HEADER + "0 1 2 3 4 5 6 # a comment\n\n   \n# another\n10 1 2 3 7 5 6\n",  # comments, blanks
    "# step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e\n"
    "0 0.1 0 0 0.3 0 0 0.01\n",  # devi_e
    "# max_devi_f step max_devi_v\n0.5 10 0.25\n0.75 20 0.125\n",  # columns by name, any order
    "\n" + HEADER + "0 1 2 3 4 5 6\n",  # a header that is not the first line: positions 0, 1, 4
    HEADER.replace("\n", "\r\n") + "0 1 2 3 4 5 6\r\n10 1 2 3 7 5 6\r\n",  # CRLF
    HEADER + "0\t1\t2\t3\t4\t5\t6\n",  # tabs
    HEADER + "0 1 2 3 4 5 6",  # a whole last line without newline: kept
    HEADER + "0 nan -nan inf -inf 5 6\n1 NaN 1e400 -0.0 1e-400 5 6\n",
])
def test_edge_cases_as_the_old_reader(tmp_path, text):
    assert_same(*both(tmp_path, text))


def test_fixed_width_rows_the_fast_path_leaves_to_loadtxt(tmp_path):
    """NaN, negatives, another exponent letter, 3-digit exponents, integers written as floats,
    fixed-point columns and per-atom columns beyond the header: all as np.loadtxt reads them."""
    values = random_values(200, seed=3)
    values[5, 0], values[6, 3], values[7, 0], values[8, 3] = np.nan, np.inf, -1.5, -2e-5
    values[9, 3], values[10, 0] = 1e-120, 3e101
    text = deepmd_text(values, np.arange(200) * 5)
    assert_same(*both(tmp_path, text))
    assert_same(*both(tmp_path, text.replace("e-0", "E-0")))
    steps = deepmd_text(values, np.arange(200)).splitlines(keepends=True)
    as_float = HEADER + "".join(f"{float(ln[:12]):12.4e}{ln[12:]}" for ln in steps[1:])
    assert_same(*both(tmp_path, as_float))
    assert_same(*both(tmp_path, deepmd_text(values, np.arange(200), fmt="18.6f")))
    per_atom = deepmd_text(random_values(50, cols=6 + 4), np.arange(50))
    assert_same(*both(tmp_path, per_atom))


def test_fast_path_only_on_lines_with_the_same_token_boundaries(tmp_path):
    """A line of the same length with one more number (in the padding of a column that is not
    read): np.loadtxt says the number of columns changed, and so does the new reader."""
    lines = deepmd_text(random_values(100, seed=4), np.arange(100)).splitlines(keepends=True)
    lines[50] = lines[50][:33] + "5" + lines[50][34:]  # min_devi_v's padding
    p = tmp_path / "model_devi.out"
    p.write_text("".join(lines))
    with pytest.raises(ValueError, match="columns"):
        old_read_model_devi(p)
    with pytest.raises(ValueError, match="columns"):
        read_model_devi(p)


def test_too_few_columns_fail_as_before(tmp_path):
    p = tmp_path / "model_devi.out"
    p.write_text("0 1 2\n10 1 2\n")
    with pytest.raises(IndexError):
        old_read_model_devi(p)
    with pytest.raises(ValueError, match="column 5 is needed"):
        read_model_devi(p)


def test_a_row_with_fewer_columns_in_the_middle_fails_as_before(tmp_path):
    p = tmp_path / "model_devi.out"
    p.write_text(HEADER + "0 1 2 3 4 5 6\n10 1 2\n20 1 2 3 4 5 6\n")
    with pytest.raises(ValueError):
        old_read_model_devi(p)
    with pytest.raises(ValueError, match="columns"):
        read_model_devi(p)


def test_a_last_line_cut_anywhere_is_dropped_or_kept_whole(tmp_path, caplog):
    """A task killed mid-write: the old reader failed on most cuts; the new one drops the cut
    line (and says so), and otherwise reads what the old reader read."""
    full = deepmd_text(random_values(40, seed=5), np.arange(40) * 10)
    last = full.rstrip("\n").rfind("\n") + 1
    p = tmp_path / "model_devi.out"
    (tmp_path / "prefix.out").write_text(full[:last])
    prefix = old_read_model_devi(tmp_path / "prefix.out")
    dropped = 0
    for cut in range(last + 1, len(full)):
        p.write_text(full[:cut])
        try:
            expected, cut_short = old_read_model_devi(p), False
        except (ValueError, IndexError):
            expected, cut_short = prefix, True
        dropped += cut_short
        with caplog.at_level(logging.WARNING, logger="dpgen_ng.explore"):
            caplog.clear()
            assert_same(read_model_devi(p), expected)
        assert ("cut short" in caplog.text) == cut_short
    assert dropped > 50
    p.write_text("           0       1.000e-02")  # the only row, cut: nothing
    assert len(read_model_devi(p)) == 0


def test_table_streamed_is_what_np_savez_wrote(tmp_path):
    """Member by member, byte for byte: the former ``np.savez`` of the concatenated columns."""
    rng = np.random.default_rng(6)
    tasks = []
    for k, n in enumerate([0, 1, 700, 3]):
        steps = rng.integers(0, 99, n) + (2**33 if k == 2 else 0)  # int64 steps kept as they are
        (tmp_path / f"{k}.out").write_text(deepmd_text(random_values(n, seed=k), steps))
        tasks.append((k % 2 + 3, tmp_path / f"{k}.out"))
    for subset in ([], tasks[:1], tasks):
        table = DeviTable()
        for i, (sys_idx, path) in enumerate(subset):
            rows = table.add(i, sys_idx, iter_model_devi(path, block_bytes=2048))
            assert rows == len(read_model_devi(path))
        table.save(tmp_path / "new.npz")
        np.savez(tmp_path / "old.npz", **old_table([(i, s, old_read_model_devi(p))
                                                     for i, (s, p) in enumerate(subset)]))
        with zipfile.ZipFile(tmp_path / "new.npz") as a, zipfile.ZipFile(tmp_path / "old.npz") as b:
            assert a.namelist() == b.namelist() == [f"{k}.npy" for k in COLUMNS]
            for name in a.namelist():
                assert a.read(name) == b.read(name), name
        assert len(table) == len(np.load(tmp_path / "new.npz")["row"])


def test_post_helpers_on_parts(tmp_path):
    """The RMS force is not asked for without deviations; only the very last frame fails."""
    assert list(force_over(iter([]), lambda: 1 / 0)) == []
    (tmp_path / "md.out").write_text(deepmd_text(random_values(700), np.arange(700)))
    parts = list(iter_model_devi(tmp_path / "md.out", block_bytes=4096))
    assert len(parts) > 3
    failed = list(last_frame_failed(force_over(parts, lambda: 4.0)))
    f = np.concatenate([p.max_devi_f for p in failed])
    expected = np.concatenate([p.max_devi_f for p in parts]) / 4.0
    assert np.isinf(f[-1]) and np.array_equal(f[:-1], expected[:-1])
    assert np.isfinite(parts[-1].max_devi_f).all()  # the parts read are not changed


def dump_text(nframes: int, natoms: int = 5, seed: int = 0) -> str:
    """A LAMMPS dump as ``dump_modify sort id`` would not write it (ids shuffled), triclinic."""
    rng = np.random.default_rng(seed)
    types = rng.integers(1, 3, natoms)
    out = []
    for f in range(nframes):
        lo, length, (xy, xz, yz) = rng.uniform(-1, 0, 3), rng.uniform(8, 10, 3), rng.uniform(-1, 1, 3)
        bx = (lo[0] + min(0.0, xy, xz, xy + xz), lo[0] + length[0] + max(0.0, xy, xz, xy + xz))
        by = (lo[1] + min(0.0, yz), lo[1] + length[1] + max(0.0, yz))
        out.append(f"ITEM: TIMESTEP\n{10 * f}\nITEM: NUMBER OF ATOMS\n{natoms}\n"
                   f"ITEM: BOX BOUNDS xy xz yz pp pp pp\n{bx[0]:.10e} {bx[1]:.10e} {xy:.10e}\n"
                   f"{by[0]:.10e} {by[1]:.10e} {xz:.10e}\n{lo[2]:.10e} {lo[2] + length[2]:.10e} {yz:.10e}\n"
                   "ITEM: ATOMS id type x y z fx fy fz\n")
        for i in rng.permutation(natoms):
            x, force = rng.uniform(-1, 11, 3), rng.normal(size=3)
            out.append(f"{i + 1} {types[i]} {x[0]:.8f} {x[1]:.8f} {x[2]:.8f} "
                       f"{force[0]:.6f} {force[1]:.6f} {force[2]:.6f}\n")
    return "".join(out)


def assert_same_system(a: dpdata.System, b: dpdata.System) -> None:
    assert a.data.keys() == b.data.keys()
    for k in a.data:
        x, y = np.asarray(a.data[k]), np.asarray(b.data[k])
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), k


TYPE_MAP = ["H", "C", "O"]


def test_dump_frames_are_dpdata_sub_systems(tmp_path):
    path = tmp_path / lammps.TRAJ
    path.write_text(dump_text(7))
    full = dpdata.System(str(path), fmt="lammps/dump", type_map=TYPE_MAP)
    dump = Dump(path, TYPE_MAP)
    assert dump.get_nframes() == full.get_nframes() == 7
    assert frame_offsets(path, block_bytes=64).tolist() == frame_offsets(path).tolist()
    for r in range(7):
        assert_same_system(dump.frames([r]), full.sub_system([r]))
    assert_same_system(dump.sub_system([5, 0, 5, 2]), full.sub_system([5, 0, 5, 2]))
    # what the sanity filters and the fingerprints index
    rows = np.array([6, 1, 1])
    assert np.array_equal(dump["coords"][rows], full["coords"][rows])
    assert np.array_equal(dump["cells"][rows], full["cells"][rows])
    assert dump["coords"][rows[:0]].shape == full["coords"][rows[:0]].shape
    assert np.array_equal(dump["coords"][3], full["coords"][3])
    assert np.array_equal(dump["atom_types"], full["atom_types"])
    assert dump["atom_names"] == full["atom_names"]
    with pytest.raises(IndexError):
        dump.frames([7])


def test_dump_cut_mid_frame_counts_its_complete_frames(tmp_path):
    text = dump_text(4, seed=1)
    path = tmp_path / lammps.TRAJ
    for cut in (len(text) - 30, text.rfind("ITEM: ATOMS") + 5, text.rfind("ITEM: TIMESTEP") + 3):
        path.write_text(text[:cut])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dpdata warns about the frame it drops
            full = dpdata.System(str(path), fmt="lammps/dump", type_map=TYPE_MAP)
        dump = Dump(path, TYPE_MAP)
        assert dump.get_nframes() == full.get_nframes() == 3
        for r in range(3):
            assert_same_system(dump.frames([r]), full.sub_system([r]))


def test_trajectories_read_only_the_frames_asked_for(tmp_path, monkeypatch):
    task = tmp_path / "task.000.000000"
    task.mkdir()
    (task / lammps.TRAJ).write_text(dump_text(50, natoms=3, seed=2))
    full = dpdata.System(str(task / lammps.TRAJ), fmt="lammps/dump", type_map=TYPE_MAP)
    read: list[list[int]] = []
    real = Dump._read

    def recording(self: Dump, rows: list[int]) -> dpdata.System:
        read.append(list(rows))
        return real(self, rows)

    monkeypatch.setattr(Dump, "_read", recording)
    trajs = Trajectories(tmp_path, [{"path": task.name}], tuple(TYPE_MAP))
    assert_same_system(trajs.frame(0, 42), full.sub_system([42]))
    assert trajs.frame(0, 50) is None  # past the end (a truncated trajectory)
    # frame 0 (atom types and order) with the last frame (is it complete?), then 42 with frame 0
    assert read == [[0, 49], [0, 42]]
    trajs(0)["cells"][[7, 3]], trajs(0)["coords"][[7, 3]]
    assert read[2:] == [[0, 3, 7]]  # one read for both keys
    assert trajs(0) is trajs(0)
    again = Trajectories(tmp_path, [{"path": task.name}], tuple(TYPE_MAP))
    assert_same_system(again.frame(0, 49), full.sub_system([49]))
    assert read[3:] == [[0, 49]]  # the last frame, read with frame 0 at the start, is not read again


# post(): the table of a stage directory, as before


def old_post_table(md_dir: Path, tasks: list[dict], rms: float | None) -> dict[str, np.ndarray]:
    """The table of the former ``post`` (``rms``: model_devi_f_avg_relative's divisor)."""
    from dpgen_ng.dispatch import read_task_rc

    kept = []
    for i, t in enumerate(tasks):
        info = read_task_rc(md_dir / t["path"])
        if info is None or not (md_dir / t["path"] / lammps.DEVI).is_file():
            continue
        devi = old_read_model_devi(md_dir / t["path"] / lammps.DEVI)
        f = devi.max_devi_f.copy()
        if rms is not None and len(devi):
            f /= rms
        if info.rc != 0 and len(devi):
            f[-1] = np.inf
        kept.append((i, t["sys_idx"], dataclasses.replace(devi, max_devi_f=f)))
    return old_table(kept)


@pytest.mark.parametrize("relative", [False, True])
def test_post_writes_the_table_the_old_post_wrote(tmp_path, example_param, relative):
    p = parse_run_params(example_param)
    p = dataclasses.replace(p, explore=dataclasses.replace(p.explore, f_avg_relative=relative))
    ctx = IterContext(tmp_path, 0, p, None, Ledger(tmp_path))  # type: ignore[arg-type]
    md_dir = ctx.stage_dir(1)
    tasks = []
    for k, (rows, rc) in enumerate([(300, 0), (0, 0), (None, 0), (25, 1), (1, 0)]):
        task = md_dir / f"task.{k % 2:03d}.{k:06d}"
        task.mkdir(parents=True)
        tasks.append({"path": task.name, "sys_idx": k % 2, "conf": "c"})
        (task / lammps.TRAJ).write_text(dump_text(2))  # one rms force for every task
        (task / "dpgen_task.rc").write_text(f"{rc} 1.0 2.0 host\n")
        if rows is not None:
            (task / lammps.DEVI).write_text(deepmd_text(random_values(rows, seed=k), np.arange(rows) * 10))
    write_manifest(md_dir, tasks)
    model_devi.post(ctx)
    rms = model_devi._rms_force(md_dir / tasks[0]["path"]) if relative else None
    np.savez(tmp_path / "old.npz", **old_post_table(md_dir, tasks, rms))
    with zipfile.ZipFile(md_dir / model_devi.DEVI_TABLE) as a, zipfile.ZipFile(tmp_path / "old.npz") as b:
        assert a.namelist() == b.namelist()
        for name in b.namelist():
            assert a.read(name) == b.read(name), name
    table = np.load(md_dir / model_devi.DEVI_TABLE)
    assert sorted(set(table["task"].tolist())) == [0, 3, 4] and len(table["row"]) == 326
    assert np.isinf(table["max_devi_f"][table["task"] == 3][-1])


def test_post_keeps_the_rows_of_a_task_killed_mid_write(tmp_path, example_param):
    ctx = IterContext(tmp_path, 0, parse_run_params(example_param), None, Ledger(tmp_path))  # type: ignore[arg-type]
    task = ctx.stage_dir(1) / "task.000.000000"
    task.mkdir(parents=True)
    text = deepmd_text(random_values(30, seed=9), np.arange(30) * 10)
    (task / lammps.DEVI).write_text(text[:-40])
    (task / "dpgen_task.rc").write_text("137 1.0 2.0 host\n")
    write_manifest(ctx.stage_dir(1), [{"path": task.name, "sys_idx": 0, "conf": "c"}])
    model_devi.post(ctx)
    table = np.load(ctx.stage_dir(1) / model_devi.DEVI_TABLE)
    assert table["step"].tolist() == list(range(0, 290, 10))
    assert np.isinf(table["max_devi_f"][-1]) and np.isfinite(table["max_devi_f"][:-1]).all()
