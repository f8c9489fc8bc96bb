"""Per-task HDF5 result files: one writer per file, appended per evaluation.

Layout of ``results/<task>.h5`` (one file per array task, written by that task alone, so no
HDF5 locking is needed on NFS)::

    /runs/<run_id>            group, attributes: record (JSON), status, started, finished,
                              wall_time, host, versions (JSON), job_id, attempts, error
    /runs/<run_id>/evals      1-D compound dataset, one row per evaluation (EVAL_DTYPE),
                              resizable; row 0 is the evaluation before training

Every operation opens the file, writes and closes it. A task killed with ``kill -9`` between two
evaluations leaves a closed, consistent file; one killed inside a write loses at most the row
being written (and an unreadable file is moved aside by the worker, never deleted).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

EVAL_FIELDS = ("epoch", "step", "lr", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy",
               "test_loss", "test_accuracy", "minibatch_loss", "wall_time")
EVAL_DTYPE = np.dtype([("epoch", "<i4"), ("step", "<i8")] + [(f, "<f8") for f in EVAL_FIELDS[2:]])
#: run statuses written by workers; "diverged" is a finished run whose loss became NaN/inf
STATUSES = ("running", "finished", "diverged", "failed")
DONE = ("finished", "diverged")
RESULTS_DIR = "results"


def open_h5(path: str | Path, mode: str = "r", retries: int = 5) -> h5py.File:
    """Open without HDF5's own file locking, retrying briefly.

    Each file has one writer by construction (its array task), so HDF5's POSIX locks add nothing
    but failures: they are unsupported on many NFS mounts, and a reader (``optbench status``) holding
    a shared lock would make the writer's open fail. A reader that catches a file mid-write gets
    an error and retries.
    """
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            return h5py.File(path, mode, locking=False)
        except (BlockingIOError, OSError) as e:
            if attempt == retries or isinstance(e, FileNotFoundError) or (mode == "r" and not Path(path).exists()):
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def eval_row(values: Mapping[str, float]) -> np.ndarray:
    row = np.zeros(1, dtype=EVAL_DTYPE)
    for f in EVAL_FIELDS:
        row[f] = values.get(f, np.nan)
    return row


class TaskFile:
    """The result file of one array task. Each method is one open–write–close."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _open(self, mode: str = "a") -> h5py.File:
        return open_h5(self.path, mode)

    def check_readable(self) -> None:
        """Raise OSError if the file exists but HDF5 cannot read it."""
        if self.path.exists():
            with self._open("r") as f:
                for rid in f.get("runs", {}):
                    f["runs"][rid].attrs.get("status")

    def begin_run(self, run_id: str, record_json: str, attrs: Mapping[str, Any]) -> None:
        with self._open() as f:
            g = f.require_group("runs").require_group(run_id)
            if "evals" not in g:
                g.create_dataset("evals", shape=(0,), maxshape=(None,), dtype=EVAL_DTYPE, chunks=(64,))
                g.attrs["started"] = time.time()
                g.attrs["attempts"] = 0
            g.attrs["record"] = record_json
            g.attrs["status"] = "running"
            g.attrs["attempts"] = int(g.attrs.get("attempts", 0)) + 1
            for k, v in attrs.items():
                g.attrs[k] = v

    def set_rows(self, run_id: str, rows: np.ndarray) -> None:
        """Make the run's rows exactly ``rows`` (used on resume: drop rows newer than the checkpoint)."""
        with self._open() as f:
            ds = f["runs"][run_id]["evals"]
            ds.resize((len(rows),))
            if len(rows):
                ds[:] = rows

    def append(self, run_id: str, row: np.ndarray) -> int:
        with self._open() as f:
            ds = f["runs"][run_id]["evals"]
            n = ds.shape[0]
            ds.resize((n + 1,))
            ds[n] = row[0]
            f.flush()
            return n + 1

    def bump(self, run_id: str, counter: str) -> None:
        """Add one to an integer attribute of the run (resumes, scratch restarts …)."""
        with self._open() as f:
            g = f["runs"][run_id]
            g.attrs[counter] = int(g.attrs.get(counter, 0)) + 1

    def set_status(self, run_id: str, status: str, **attrs: Any) -> None:
        assert status in STATUSES, status
        with self._open() as f:
            g = f["runs"][run_id]
            g.attrs["status"] = status
            for k, v in attrs.items():
                g.attrs[k] = v

    def run_ids(self) -> list[str]:
        if not self.path.exists():
            return []
        with self._open("r") as f:
            return list(f.get("runs", {}))

    def status_of(self, run_id: str) -> str | None:
        if not self.path.exists():
            return None
        with self._open("r") as f:
            g = f.get("runs", {}).get(run_id)
            return None if g is None else str(g.attrs.get("status"))

    def rows(self, run_id: str) -> np.ndarray:
        with self._open("r") as f:
            return f["runs"][run_id]["evals"][()]


def scan_file(path: Path) -> list[dict[str, Any]]:
    """Attributes and row count of every run in one result file (raises OSError if unreadable)."""
    out = []
    with open_h5(path, "r", retries=2) as f:
        runs = f.get("runs")
        if runs is None:
            return out
        for rid, g in runs.items():
            a = g.attrs
            out.append({"run_id": rid, "status": str(a.get("status", "")), "n_evals": g["evals"].shape[0],
                        "file": path.name, "attempts": int(a.get("attempts", 0)),
                        "requeues": int(a.get("requeues", 0)), "error": str(a.get("error", "")),
                        "host": str(a.get("host", "")), "job_id": str(a.get("job_id", "")),
                        "wall_time": float(a.get("wall_time", np.nan))})
    return out


def result_files(study_dir: str | Path) -> list[Path]:
    d = Path(study_dir) / RESULTS_DIR
    return sorted(d.glob("*.h5")) if d.is_dir() else []


#: ``optbench status``'s cache of scanned result files (see :func:`scan_results`), in the study directory
SCAN_CACHE = ".scan-cache.json"
_SCAN_KEYS = ("run_id", "status", "n_evals", "file", "attempts", "requeues", "error", "host", "job_id", "wall_time")
_SCAN_CACHE_VERSION = 1
_SETTLED_NS = 2_000_000_000  # a file is cached only if unmodified for this long when it was read


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _load_scan_cache(study_dir: Path) -> dict[str, list]:
    try:
        data = json.loads((study_dir / SCAN_CACHE).read_text())
        if data.get("version") == _SCAN_CACHE_VERSION and data.get("keys") == list(_SCAN_KEYS):
            return data["files"]
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    return {}


def _save_scan_cache(study_dir: Path, files: dict[str, list]) -> None:
    p = study_dir / SCAN_CACHE
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"version": _SCAN_CACHE_VERSION, "keys": list(_SCAN_KEYS), "files": files}))
        os.replace(tmp, p)
    except OSError:  # a read-only study directory: no cache, no harm
        try:
            tmp.unlink()
        except OSError:
            pass


def scan_results(study_dir: str | Path, cache: bool = False) -> tuple[dict[str, dict[str, Any]], list[tuple[Path, str]]]:
    """The best-known state of every run found in the study's result files, and the unreadable files.

    A run can appear in several files (a task killed before finishing, then re-submitted in a
    new chunk); a finished copy wins over an unfinished one.

    ``cache=True`` (``optbench status``) reuses what an earlier scan read from a file whose inode,
    size and modification time (ns) are unchanged, from ``<study>/.scan-cache.json``: reading a result
    file costs about 1 ms per run (HDF5 object and attribute reads), so a 53,760-run study takes a
    minute to scan cold and ~1 s warm. A file is cached only if its stat was the same before and
    after reading it and it had not been modified for 2 s, so a write in progress is never cached.
    ``optbench submit`` scans without the cache: it always reads the files themselves.
    """
    rank = {"finished": 3, "diverged": 3, "failed": 2, "running": 1}
    state: dict[str, dict[str, Any]] = {}
    bad: list[tuple[Path, str]] = []
    study_dir = Path(study_dir)
    cached = _load_scan_cache(study_dir) if cache else {}
    keep: dict[str, list] = {}
    scan_start = time.time_ns()
    for path in result_files(study_dir):
        entries = None
        before = _stat_key(path) if cache else None
        hit = cached.get(path.name)
        if before is not None and hit is not None and hit[0] == before:
            entries = [dict(zip(_SCAN_KEYS, row)) for row in hit[1]]
            keep[path.name] = hit
        if entries is None:
            for attempt in range(3):
                try:
                    entries = scan_file(path)
                    break
                except Exception as e:  # a file caught mid-write reads as garbage: retry, then report it
                    err = str(e).splitlines()[0] if str(e) else type(e).__name__
                    time.sleep(0.2 * (attempt + 1))
            if entries is not None and before is not None and before[2] < scan_start - _SETTLED_NS \
                    and _stat_key(path) == before:
                keep[path.name] = [before, [[e[k] for k in _SCAN_KEYS] for e in entries]]
        if entries is None:
            bad.append((path, err))
            continue
        for e in entries:
            old = state.get(e["run_id"])
            if old is None or rank.get(e["status"], 0) > rank.get(old["status"], 0):
                if old is not None:  # attempts and requeues add up over every file the run appears in
                    e = {**e, "attempts": e["attempts"] + old["attempts"], "requeues": e["requeues"] + old["requeues"]}
                state[e["run_id"]] = e
            else:
                old["attempts"] += e["attempts"]
                old["requeues"] += e["requeues"]
    if cache and {k: v[0] for k, v in keep.items()} != {k: v[0] for k, v in cached.items()}:
        _save_scan_cache(study_dir, keep)
    return state, bad


def versions() -> str:
    import platform

    v = {"python": platform.python_version(), "numpy": np.__version__, "h5py": h5py.__version__}
    try:
        import torch

        v["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        from optbench import __version__

        v["optbench"] = __version__
    except ImportError:
        pass
    return json.dumps(v, sort_keys=True)


def ensure_writable(directory: Path) -> None:
    """Fail early, with the path, if results cannot be written (read-only or missing mount)."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / f".write-probe-{os.getpid()}"
    probe.write_bytes(b"x")
    probe.unlink()


def iter_curves(path: Path) -> Iterable[tuple[str, dict[str, Any], np.ndarray]]:
    with open_h5(path, "r") as f:
        for rid, g in f.get("runs", {}).items():
            yield rid, dict(g.attrs), g["evals"][()]


QUARANTINE_DIR = "quarantine"


def quarantine(path: Path, reason: str) -> tuple[Path, Path | None, int]:
    """Move an unreadable result file aside (never delete it) and salvage what can still be read.

    Returns (where it went, the salvage file or None, number of finished runs recovered). Runs
    that cannot be recovered are simply absent afterwards, so ``optbench submit`` trains them
    again (from their checkpoints where these survived).
    """
    qdir = path.parent / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    aside = qdir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
    os.replace(path, aside)
    (qdir / f"{aside.name}.reason.txt").write_text(reason + "\n")
    salvage = path.with_name(f"salvaged-{path.stem}-{int(time.time())}.h5")
    recovered = 0
    try:
        with h5py.File(aside, "r", locking=False) as src:
            for rid in list(src.get("runs", {})):
                try:
                    g = src["runs"][rid]
                    status = str(g.attrs.get("status"))
                    rows = g["evals"][()]
                    attrs = {k: g.attrs[k] for k in g.attrs}
                except Exception:  # this group is damaged: leave the run to be re-trained
                    continue
                if status not in DONE:
                    continue
                with h5py.File(salvage, "a", locking=False) as dst:
                    ng = dst.require_group("runs").create_group(rid)
                    ng.create_dataset("evals", data=rows, maxshape=(None,), chunks=(64,))
                    for k, v in attrs.items():
                        ng.attrs[k] = v
                recovered += 1
    except Exception:
        pass
    return aside, (salvage if recovered else None), recovered
