"""Benchmark: reading model_devi.out files into the selection table, old reader vs streaming.

Writes ``--files`` model_devi.out files holding ``--rows`` rows in all, in the DeePMD pair style's
fixed-width layout (``%12d``, six `` %18.6e`` columns, ~127 bytes a row), to a temp dir. Then, each
in a fresh child process:

- old: the reader before issue 14 (``read_text``, a list of every line, ``np.loadtxt`` of all
  columns), lists of per-task arrays of the six columns, ``np.concatenate``, ``np.savez``;
- new: :func:`dpgen_ng.explore.devi.iter_model_devi` into a
  :class:`~dpgen_ng.explore.devi.DeviTable` streamed to the ``.npz`` (what ``model_devi.post``
  does);

each followed by the fixed-trust classification of the table it wrote (explore/select.py's
``classify`` on max_devi_f and max_devi_v, loaded from the ``.npz``). Printed: seconds of the
table build (read + table + write) and of the classification, and the child's peak resident
memory (VmHWM: the whole process, interpreter and numpy included) after the table and after the
classification; its value right after the imports is printed as the baseline.
Target: 10^7 rows into the table in ≤ 5 s and ≤ 300 MB. With ``--keep DIR`` the generated files
stay in DIR and are used again by the next run with the same ``--rows`` and ``--files``.
A figure, not a test.

    python bench/selection.py [--rows 10000000] [--files 100] [--skip-old] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dpgen_ng.explore.devi import COLUMNS, DeviTable, iter_model_devi  # noqa: E402
from dpgen_ng.explore.select import Trust, classify  # noqa: E402

HEADER = ("#       step         max_devi_v         min_devi_v         avg_devi_v"
          "         max_devi_f         min_devi_f         avg_devi_f\n")


def old_build(files: list[Path], out: Path) -> None:
    """The table of ``model_devi.post`` before issue 14 (its reader is kept as the tests' reference;
    imported here only, so that the streaming run's baseline memory does not include it)."""
    from tests.test_streaming import old_read_model_devi

    cols: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    for i, path in enumerate(files):
        devi = old_read_model_devi(path)
        n = len(devi)
        cols["task"].append(np.full(n, i))
        cols["sys_idx"].append(np.full(n, i % 3))
        cols["row"].append(np.arange(n))
        cols["step"].append(devi.step)
        cols["max_devi_v"].append(devi.max_devi_v)
        cols["max_devi_f"].append(devi.max_devi_f.copy())
    table = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}
    np.savez(out, **table)


def new_build(files: list[Path], out: Path) -> None:
    table = DeviTable()
    for i, path in enumerate(files):
        table.add(i, i % 3, iter_model_devi(path))  # as model_devi.post: a block at a time
    table.save(out)


def fixed_width(values: np.ndarray, width: int = 19) -> np.ndarray:
    """`` %18.6e`` of positive values as bytes, one row each."""
    e = np.floor(np.log10(values)).astype(np.int64)
    m = np.rint(values / 10.0 ** e * 1e6).astype(np.int64)
    e[m >= 10**7] += 1
    m[m >= 10**7] //= 10
    out = np.full((values.size, width), ord(" "), dtype=np.uint8)
    out[:, width - 12] = 48 + m // 10**6
    out[:, width - 11] = ord(".")
    for k in range(6):
        out[:, width - 10 + k] = 48 + (m // 10 ** (5 - k)) % 10
    out[:, width - 4] = ord("e")
    out[:, width - 3] = np.where(e < 0, ord("-"), ord("+"))
    out[:, width - 2], out[:, width - 1] = 48 + np.abs(e) // 10, 48 + np.abs(e) % 10
    return out


def integers(values: np.ndarray, width: int = 12) -> np.ndarray:
    """``%12d`` of non-negative integers as bytes."""
    out = np.full((values.size, width), ord(" "), dtype=np.uint8)
    v = values.copy()
    for k in range(width - 1, -1, -1):
        out[:, k] = np.where((v > 0) | (k == width - 1), 48 + v % 10, ord(" "))
        v //= 10
    return out


def generate(root: Path, rows: int, nfiles: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(nfiles):
        n = rows // nfiles + (i < rows % nfiles)
        values = np.exp(rng.normal(-4, 1.5, (n, 6)))  # deviations ~ 1e-4 … 1
        line = np.hstack([integers(np.arange(n) * 10)] + [fixed_width(values[:, k]) for k in range(6)]
                         + [np.full((n, 1), ord("\n"), dtype=np.uint8)])
        path = root / f"task.{i:06d}" / "model_devi.out"
        path.parent.mkdir(parents=True)
        path.write_bytes(HEADER.encode() + line.tobytes())
        files.append(path)
    return files


def peak_mb() -> float:
    """Peak resident memory of this process so far: VmHWM (Linux), else ru_maxrss (which on Linux
    may carry the peak of the parent that spawned this process)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, root: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    base = peak_mb()
    files = sorted(root.glob("task.*/model_devi.out"))
    out = root / f"{kind}.npz"
    t0 = time.perf_counter()
    (old_build if kind == "old" else new_build)(files, out)
    t1 = time.perf_counter()
    table_mb = peak_mb()
    table = np.load(out)
    codes = classify(table["max_devi_f"], table["max_devi_v"], Trust(0.05, 0.15))
    t2 = time.perf_counter()
    print(json.dumps({"build_s": t1 - t0, "classify_s": t2 - t1, "rows": int(codes.size),
                      "base_mb": base, "table_mb": table_mb, "peak_mb": peak_mb()}))


def measure(kind: str, root: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(root)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10**7)
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--skip-old", action="store_true", help="only the streaming reader")
    ap.add_argument("--keep", type=Path, help="work dir to use and keep (default: a temp dir)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="dpgen-bench-selection-"))
    marker = root / "generated.json"
    t0 = time.perf_counter()
    if marker.is_file() and json.loads(marker.read_text()) == [args.rows, args.files]:
        files = sorted(root.glob("task.*/model_devi.out"))
    else:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        files = generate(root, args.rows, args.files)
        marker.write_text(json.dumps([args.rows, args.files]))
    size = sum(f.stat().st_size for f in files)
    print(f"bench/selection.py: {args.rows} rows in {args.files} files ({size / 1e9:.2f} GB of text, "
          f"written in {time.perf_counter() - t0:.1f} s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'reader':<8}{'table s':>9}{'rows/s':>10}{'peak MB: table':>16}{'+ classify':>12}"
          f"{'classify s':>12}{'baseline MB':>13}")
    results = {}
    for kind in ("new",) if args.skip_old else ("old", "new"):
        r = results[kind] = measure(kind, root)
        assert r["rows"] == args.rows, r
        print(f"{kind:<8}{r['build_s']:>9.2f}{r['rows'] / r['build_s']:>10.3g}{r['table_mb']:>16.0f}"
              f"{r['peak_mb']:>12.0f}{r['classify_s']:>12.2f}{r['base_mb']:>13.0f}")
    if len(results) == 2:
        old, new = np.load(root / "old.npz"), np.load(root / "new.npz")
        same = all(old[k].dtype == new[k].dtype and np.array_equal(old[k], new[k]) for k in COLUMNS)
        print(f"same table: {same}; speed-up {results['old']['build_s'] / results['new']['build_s']:.1f}x, "
              f"table memory {results['old']['table_mb'] / results['new']['table_mb']:.1f}x less")
    r = results["new"]
    ok = r["build_s"] <= 5 * args.rows / 1e7 and r["table_mb"] <= 300
    print(f"target (10^7 rows into the table in ≤ 5 s and ≤ 300 MB peak, time scaled to {args.rows} rows): "
          f"{'met' if ok else 'missed'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
