"""Per-task HDF5 result files: one writer per file, appended per evaluation.

Layout of ``results/<task>.h5`` (one file per array task, written by that task alone, so no
HDF5 locking is needed on NFS)::

    /runs/<run_id>            group, attributes: record (JSON), status, started, finished,
                              wall_time, host, versions (JSON), job_id, attempts, error
    /runs/<run_id>/evals      1-D compound dataset, one row per evaluation (EVAL_DTYPE),
                              resizable; row 0 is the evaluation before training
    attribute summary         1-D uint8: UTF-8 JSON index of the file's runs (issue 8), see below,
                              padded with spaces (rewritten in place); over 60 kB it is the
                              1-D uint8 dataset /summary instead
    attribute summary_gen     int64: write sessions begun on this file

Every operation opens the file, writes and closes it. A task killed with ``kill -9`` between two
evaluations leaves a closed, consistent file; one killed inside a write loses at most the row
being written (and an unreadable file is moved aside by the worker, never deleted).

**The summary** lets ``optbench status`` learn every run's state from one small read per file
instead of reading each run's group and attributes (~10 ms a file of 10 runs; a 53,760-run study
took a minute to scan cold). It holds, per run, exactly what :func:`scan_file` reports
(:data:`SUMMARY_KEYS`), computed by :func:`run_entry` from the run's data after each change,
so the per-run data stay the source of truth and the summary is an index of them. Every write
session of :class:`TaskFile` (1) increments ``summary_gen`` and flushes, before touching any data,
(2) changes the data and flushes, (3) writes the summary stamped with the new generation. A
summary is trusted only if its generation equals ``summary_gen`` and it lists as many runs as
``/runs`` holds: a process killed after step 1 leaves them unequal, and readers fall back to
reading the data (the next write session rebuilds the summary from the data). Files without a
summary (written by an older optbench or another tool) are read the slow way; the first write
session of this version on such a file builds the summary from its data. Not detectable: an older
optbench changing the runs already in a file that this version wrote (a downgrade mid-study);
``optbench status --full-scan`` reads every run's data.
"""
from __future__ import annotations

import glob
import inspect
import itertools
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np
from h5py import h5a, h5d, h5f, h5g, h5p, h5s

from optbench.iobudget import IOBudget

EVAL_FIELDS = ("epoch", "step", "lr", "train_loss", "train_accuracy", "valid_loss", "valid_accuracy",
               "test_loss", "test_accuracy", "minibatch_loss", "wall_time")
EVAL_DTYPE = np.dtype([("epoch", "<i4"), ("step", "<i8")] + [(f, "<f8") for f in EVAL_FIELDS[2:]])
#: run statuses written by workers; "diverged" is a finished run whose loss became NaN/inf
STATUSES = ("running", "finished", "diverged", "failed")
DONE = ("finished", "diverged")
RESULTS_DIR = "results"


#: how files are opened, decided at the first open: (make_fid, fapl, fcpl) from h5py 3's private
#: helpers, or False for the public ``h5py.File(..., locking=False)`` (see :func:`_fast_open_parts`)
_FAST: tuple | bool | None = None


def _h5py_private() -> tuple:
    """h5py 3's private ``make_fid``, ``make_fapl``, ``make_fcpl`` (ImportError in an h5py without them)."""
    from h5py._hl.files import make_fapl, make_fcpl, make_fid

    return make_fid, make_fapl, make_fcpl


def _fast_open_parts() -> tuple | bool:
    """``make_fid`` and h5py's own file access / creation property lists for ``h5py.File(path, mode,
    locking=False)``, made once (building them costs as much as opening a small file) — or False where
    this h5py's private helpers are missing or take other arguments (checked without opening a file).
    Decided once a process, so that a fallback costs nothing more per open."""
    global _FAST
    if _FAST is None:
        try:
            make_fid, make_fapl, make_fcpl = _h5py_private()
            fapl = make_fapl(None, locking=False)
            fcpl = make_fcpl(track_order=h5py.get_config().track_order)
            inspect.signature(make_fid).bind(b"", "r", None, fapl, fcpl)  # TypeError if the call changed
            _FAST = (make_fid, fapl, fcpl)
        except (ImportError, TypeError, AttributeError, ValueError):
            _FAST = False
    return _FAST


def _open_fid(path: str | Path, mode: str) -> h5py.h5f.FileID:
    """The low-level file id of ``h5py.File(path, mode, locking=False)``: through h5py's private
    helpers with property lists made once (h5py 3.10–3.x), else the public call (slower, the same
    file access). Errors of the open itself (a missing or damaged file) propagate either way."""
    parts = _fast_open_parts()
    if not parts:
        return h5py.File(path, mode, locking=False).id  # the id stays open while it is referenced
    make_fid, fapl, fcpl = parts
    return make_fid(os.fsencode(path), mode, None, fapl, fcpl)


def _open_fast(path: str | Path, mode: str) -> h5py.File:
    """``h5py.File(path, mode, locking=False)`` through :func:`_open_fid`."""
    return h5py.File(_open_fid(path, mode))


def open_h5(path: str | Path, mode: str = "r", retries: int = 5) -> h5py.File:
    """Open without HDF5's own file locking, retrying briefly.

    Each file has one writer by construction (its array task), so HDF5's POSIX locks add nothing
    but failures: they are unsupported on many NFS mounts, and a reader (``optbench status``) holding
    a shared lock would make the writer's open fail. A reader that catches a file mid-write gets
    an error and retries. (Equivalent to ``h5py.File(path, mode, locking=False)``.)
    """
    delay = 0.05
    for attempt in range(retries + 1):
        try:
            return _open_fast(path, mode)
        except (BlockingIOError, OSError) as e:
            if attempt == retries or isinstance(e, FileNotFoundError) or (mode == "r" and not Path(path).exists()):
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def eval_row(values: Mapping[str, float]) -> np.ndarray:
    """One evaluation row (a 1-element array of :data:`EVAL_DTYPE`; missing fields NaN), built from
    a tuple in one call: assigning the fields one by one took 5.4 µs, this 1.9 µs (once an epoch)."""
    return np.array([tuple(values.get(f, np.nan) for f in EVAL_FIELDS)], dtype=EVAL_DTYPE)


def stack_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluation rows (arrays of :data:`EVAL_DTYPE`, one row or several each) as one writable 1-D table,
    a copy; rows of another dtype with the same field names are cast field by field, others refused.

    Why not ``np.concatenate``: for a structured dtype it resolves the common dtype field by field for
    every input, ~15 µs a row — 1.6 ms for the 100 rows of a 100-epoch run, more than the rest of P1's
    checkpoint that packs them; joining their bytes takes 8 µs."""
    if not rows:  # as np.concatenate: a run always has its epoch-0 row, so none means a broken caller or file
        raise ValueError("no evaluation rows to stack")
    parts = []
    for r in rows:
        if r.dtype != EVAL_DTYPE:
            if set(r.dtype.names or ()) != set(EVAL_FIELDS):
                raise ValueError(f"evaluation rows with fields {r.dtype.names}, expected {EVAL_DTYPE.names}")
            cast = np.zeros(r.shape, dtype=EVAL_DTYPE)
            for f in EVAL_FIELDS:  # by name: a structured astype assigns the fields by position
                cast[f] = r[f]
            r = cast
        parts.append(np.ascontiguousarray(r).tobytes())
    return np.frombuffer(bytearray(b"".join(parts)), dtype=EVAL_DTYPE)


# ------------------------------------------------------------------ the per-file summary (issue 8)
SUMMARY = "summary"
SUMMARY_GEN = "summary_gen"
SUMMARY_FORMAT = 1
#: what the summary holds per run: the fields of a :func:`scan_file` entry but its run id and file name
SUMMARY_KEYS = ("status", "n_evals", "attempts", "requeues", "error", "host", "job_id", "wall_time")


def run_entry(g: h5py.Group) -> dict[str, Any]:
    """What the scan reports of one run, from its group (the source of truth): :data:`SUMMARY_KEYS`."""
    a = g.attrs
    have = set(a)  # one listing: looking up a missing attribute costs HDF5 an error stack

    def get(k: str, default: Any) -> Any:
        return a[k] if k in have else default

    return {"status": str(get("status", "")), "n_evals": int(g["evals"].shape[0]),
            "attempts": int(get("attempts", 0)), "requeues": int(get("requeues", 0)),
            "error": str(get("error", "")), "host": str(get("host", "")), "job_id": str(get("job_id", "")),
            "wall_time": float(get("wall_time", np.nan))}


_GEN = SUMMARY_GEN.encode()


def _read_gen(fid: h5f.FileID) -> int | None:
    if not h5a.exists(fid, _GEN):
        return None
    gen = np.zeros((), dtype=np.int64)
    h5a.open(fid, _GEN).read(gen)
    return int(gen)


_SUMMARY = SUMMARY.encode()
#: the largest summary kept as an attribute: an attribute must fit in one object header message
#: (64 KiB) in the file format h5py writes by default; larger ones are a dataset
_ATTR_MAX = 60_000


def _read_blob(fid: h5f.FileID) -> bytes | None:
    if h5a.exists(fid, _SUMMARY):
        src = h5a.open(fid, _SUMMARY)
        buf = np.empty(src.shape, dtype=np.uint8)
        src.read(buf)
        return buf.tobytes()
    try:
        ds = h5d.open(fid, _SUMMARY)
    except KeyError:
        return None
    buf = np.empty(ds.shape, dtype=np.uint8)
    if buf.size:
        ds.read(h5s.ALL, h5s.ALL, buf)
    return buf.tobytes()


def read_summary(fid: h5f.FileID, gen: int | None = None, check_runs: bool = True) -> dict[str, list] | None:
    """The file's summary, run_id -> values of :data:`SUMMARY_KEYS`; None if it has none or it is stale.

    Low-level calls on an open file (a few HDF5 calls, no per-run object is opened): stale means its
    generation is not the file's ``summary_gen`` (a write session did not complete) or, with
    ``check_runs``, it lists a different number of runs than ``/runs`` holds (runs added by a writer
    that keeps no summary). ``gen``: the file's ``summary_gen`` if already read.
    """
    try:
        if gen is None:
            gen = _read_gen(fid)
            if gen is None:
                return None
        blob = _read_blob(fid)
        if blob is None:
            return None
        data = json.loads(blob)
        if data["format"] != SUMMARY_FORMAT or data["keys"] != list(SUMMARY_KEYS) or data["gen"] != gen:
            return None
        runs = data["runs"]
        if not isinstance(runs, dict):
            return None
        if check_runs and _n_runs(fid) != len(runs):
            return None
    except (KeyError, OSError, RuntimeError, ValueError, TypeError):  # absent or damaged: use the data
        return None
    return runs


class _Index:
    """A file's summary in memory: the values of each run and their JSON text (a changed run alone is
    re-encoded: a file of 200 runs is re-written after every evaluation of one of them)."""

    def __init__(self, runs: dict[str, list]):
        self.runs: dict[str, list] = {}
        self.text: dict[str, str] = {}
        for rid, values in runs.items():
            self.set(rid, values)

    def set(self, rid: str, values: list) -> None:
        self.runs[rid] = values
        self.text[rid] = json.dumps(rid) + ":" + json.dumps(values, separators=(",", ":"))

    def blob(self, gen: int) -> bytes:
        head = json.dumps({"format": SUMMARY_FORMAT, "gen": gen, "keys": list(SUMMARY_KEYS)}, separators=(",", ":"))
        return (head[:-1] + ',"runs":{' + ",".join(self.text.values()) + "}}").encode()

    def write(self, fid: h5f.FileID, gen: int) -> None:
        """As the root attribute ``summary``, rewritten in place while it fits (the JSON is padded with
        spaces to a power of two); as the dataset ``/summary`` if it is larger than :data:`_ATTR_MAX`."""
        blob = self.blob(gen)
        has_attr = h5a.exists(fid, _SUMMARY)
        root = h5g.open(fid, b"/")
        has_ds = root.links.exists(_SUMMARY)
        if len(blob) <= _ATTR_MAX:
            cap = h5a.open(fid, _SUMMARY).shape[0] if has_attr else 0
            want = min(_ATTR_MAX, max(1024, 1 << (len(blob) - 1).bit_length()))
            if cap < len(blob) or cap >= 4 * want:  # outgrown, or four times too large: a new size
                if has_attr:
                    h5a.delete(fid, _SUMMARY)
                cap = want
                h5a.create(fid, _SUMMARY, h5py.h5t.STD_U8LE, h5s.create_simple((cap,)))
            data = np.full(cap, ord(" "), dtype=np.uint8)
            data[:len(blob)] = np.frombuffer(blob, dtype=np.uint8)
            h5a.open(fid, _SUMMARY).write(data)
            if has_ds:
                root.unlink(_SUMMARY)
            return
        data = np.frombuffer(blob, dtype=np.uint8)
        if has_ds:
            ds = h5d.open(fid, _SUMMARY)
            ds.set_extent((len(data),))
        else:
            dcpl = h5p.create(h5p.DATASET_CREATE)
            dcpl.set_chunk((16384,))
            ds = h5d.create(fid, _SUMMARY, h5py.h5t.STD_U8LE, h5s.create_simple((len(data),), (h5s.UNLIMITED,)),
                            dcpl=dcpl)
        ds.write(h5s.ALL, h5s.ALL, data)
        if has_attr:
            h5a.delete(fid, _SUMMARY)


def _entry_values(g: h5py.Group) -> list:
    e = run_entry(g)
    return [e[k] for k in SUMMARY_KEYS]


def _n_runs(fid: h5f.FileID) -> int:
    try:
        return len(h5g.open(fid, b"runs"))
    except (KeyError, ValueError):  # no runs yet
        return 0


_N_EVALS = SUMMARY_KEYS.index("n_evals")


class TaskFile:
    """The result file of one array task. Each method is one open–write–close (reads: open–read–close)
    and every write keeps the file's summary (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._index: tuple[tuple[int, int, int], _Index] | None = None  # ((dev, inode, gen), summary) as last written

    def _open(self, mode: str = "a") -> h5py.File:
        return open_h5(self.path, mode)

    @contextmanager
    def _writing(self, run_id: str | None) -> Iterator[tuple[h5py.File, dict]]:
        """One write session that changes run ``run_id``'s data, keeping the summary: (1) bump
        ``summary_gen`` and flush, (2) the caller's data change and flush, (3) the summary.

        Yields the file and a note: a caller that changed only the run's row count sets
        ``note["n_evals"]``, so its summary entry is updated without reading the run's attributes.
        The summary this object wrote last is kept in memory and reused while the file is the same
        one (device, inode) at the same generation, i.e. nobody else has written it since.
        """
        cached, self._index = self._index, None  # kept again only once this session's summary is written
        with self._open() as f:
            fid = f.id
            old = _read_gen(fid)
            st = os.fstat(fid.get_vfd_handle())
            index = None
            if old is not None:
                if cached is not None and cached[0] == (st.st_dev, st.st_ino, old) \
                        and len(cached[1].runs) == _n_runs(fid):
                    index = cached[1]
                else:
                    runs = read_summary(fid, old)
                    index = None if runs is None else _Index(runs)  # None: absent or stale: rebuilt below
            gen = (old or 0) + 1
            if old is None:
                h5a.create(fid, _GEN, h5py.h5t.STD_I64LE, h5s.create(h5s.SCALAR)).write(np.array(gen, dtype=np.int64))
            else:
                h5a.open(fid, _GEN).write(np.array(gen, dtype=np.int64))
            f.flush()  # on disk before any data changes: a crash from here on leaves the summary stale
            note: dict[str, Any] = {}
            yield f, note
            f.flush()  # the data are on disk before the summary says so
            if index is None:
                index = _Index({rid: _entry_values(g) for rid, g in f.get("runs", {}).items()})
            elif run_id is not None:
                values = index.runs.get(run_id)
                if values is not None and set(note) == {"n_evals"}:
                    values = list(values)
                    values[_N_EVALS] = int(note["n_evals"])
                else:
                    values = _entry_values(f["runs"][run_id])
                index.set(run_id, values)
            self._before_summary()
            index.write(fid, gen)
        self._index = ((st.st_dev, st.st_ino, gen), index)

    def _before_summary(self) -> None:
        """Hook between the data flush and the summary write (tests kill the process here)."""

    def index(self) -> None:
        """Write the summary of a file that lacks one or whose summary is stale, from its data (a file
        written by an older optbench or another tool); a no-op on a file with a current summary."""
        if not self.path.exists():
            return
        with open_h5(self.path, "r") as f:
            if read_summary(f.id) is not None:
                return
        with self._writing(None):
            pass  # no data change: the summary is built from the data

    def check_readable(self) -> None:
        """Raise OSError if the file exists but HDF5 cannot read it."""
        if self.path.exists():
            with self._open("r") as f:
                for rid in f.get("runs", {}):
                    f["runs"][rid].attrs.get("status")

    def begin_run(self, run_id: str, record_json: str, attrs: Mapping[str, Any]) -> None:
        with self._writing(run_id) as (f, _):
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
        with self._writing(run_id) as (f, note):
            ds = f["runs"][run_id]["evals"]
            ds.resize((len(rows),))
            if len(rows):
                ds[:] = rows
            note["n_evals"] = len(rows)

    def append(self, run_id: str, rows: np.ndarray) -> int:
        """Add evaluation rows (one or several: a write session costs the same) to the run's table;
        returns its new length."""
        rows = np.ascontiguousarray(rows, dtype=EVAL_DTYPE).reshape(-1)
        k = len(rows)
        with self._writing(run_id) as (f, note):  # low-level calls: h5py's indexing costs more than the write
            ds = h5d.open(f.id, f"runs/{run_id}/evals".encode())
            n = ds.shape[0]
            ds.set_extent((n + k,))
            space = ds.get_space()
            space.select_hyperslab((n,), (k,))
            ds.write(h5s.create_simple((k,)), space, rows)
            note["n_evals"] = n + k
        return n + k

    def bump(self, run_id: str, counter: str) -> None:
        """Add one to an integer attribute of the run (resumes, scratch restarts …)."""
        with self._writing(run_id) as (f, _):
            g = f["runs"][run_id]
            g.attrs[counter] = int(g.attrs.get(counter, 0)) + 1

    def set_status(self, run_id: str, status: str, **attrs: Any) -> None:
        assert status in STATUSES, status
        with self._writing(run_id) as (f, _):
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


def scan_file(path: Path, summary: bool = False) -> list[dict[str, Any]]:
    """Attributes and row count of every run in one result file (raises OSError if unreadable).

    ``summary=True``: from the file's summary when it has a current one (one small read), else from
    every run's data as with ``summary=False``.
    """
    path = Path(path)
    fid = _open_fid(path, "r")  # as open_h5(path), without h5py's File around it
    if summary:
        try:
            runs = read_summary(fid)
        except BaseException:
            fid.close()
            raise
        if runs is not None:
            fid.close()
            return [{"run_id": rid, **dict(zip(SUMMARY_KEYS, runs[rid])), "file": path.name}
                    for rid in sorted(runs)]  # in HDF5's order of the run groups
    with h5py.File(fid) as f:
        return [{"run_id": rid, **run_entry(g), "file": path.name} for rid, g in f.get("runs", {}).items()]


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


def scan_results(study_dir: str | Path, cache: bool = False,
                 summary: bool = False) -> tuple[dict[str, dict[str, Any]], list[tuple[Path, str]]]:
    """The best-known state of every run found in the study's result files, and the unreadable files.

    A run can appear in several files (a task killed before finishing, then re-submitted in a
    new chunk); a finished copy wins over an unfinished one.

    ``cache=True`` (``optbench status``) reuses what an earlier scan read from a file whose inode,
    size and modification time (ns) are unchanged, from ``<study>/.scan-cache.json``: reading a result
    file costs about 1 ms per run (HDF5 object and attribute reads), so a 53,760-run study takes a
    minute to scan cold and ~1 s warm. A file is cached only if its stat was the same before and
    after reading it and it had not been modified for 2 s, so a write in progress is never cached.

    ``summary=True`` (``optbench status``) reads a file's summary instead of its runs where it has a
    current one (:func:`scan_file`): ~0.5 ms a file instead of ~1 ms a run, the same entries (a
    53,760-run study in 5,376 files: ~2.5 s instead of ~55 s on a 2-core machine). Reading the
    files in threads gains nothing (h5py holds a global lock around every HDF5 call); forked
    processes gained 1.3x on an idle 2-core machine and lost time on a loaded one, so it reads serially.

    ``optbench submit`` scans without either: it reads every run's data, so a damaged run group is
    found (and its file quarantined) before anything is submitted.
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
                    entries = scan_file(path, summary=summary)
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


class RowWriter:
    """A run's evaluation rows into its task file, written in groups (the trainer's results sink).

    Why groups: a write session (open, two flushes, the file's summary) costs ~0.6 ms, and the
    smallest problems train and evaluate an epoch in ~2.5 ms (P1): a write per epoch would be a fifth of
    such a run. Rows after the last checkpoint are not durable anyway — a resumed run makes its rows
    those of its checkpoint — so a row may wait in memory: it is written once writing costs at most
    ``overhead`` of the time since the last write (the profile's ``checkpoint_overhead``; every epoch
    for epochs longer than write-time / overhead, always with ``overhead >= 1``), and at
    :meth:`flush`, which the worker calls before each checkpoint and when the run ends. The first
    row (the evaluation before training) is written at once: it shows the run has started.
    """

    def __init__(self, tf: "TaskFile", run_id: str, overhead: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self.tf, self.run_id = tf, run_id
        self.pending: list[np.ndarray] = []
        self.budget = IOBudget(overhead, clock)  # the same rule as the epoch-end checkpoints

    def rows_restored(self, rows: np.ndarray) -> None:
        self.pending.clear()
        self.tf.set_rows(self.run_id, rows)

    def append(self, row: np.ndarray) -> None:
        self.pending.append(row)
        if self.budget.due():
            self.flush()

    def flush(self) -> None:
        """Write the rows that wait (none: nothing happens)."""
        if not self.pending:
            return
        self.budget.spend(lambda: self.tf.append(self.run_id, stack_rows(self.pending)))
        self.pending.clear()


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


SALVAGE_PREFIX = "salvaged-"  # salvaged-<task file's stem>-<unix time>.h5: the finished runs recovered from a file


def _original_stem(file_name: str) -> str:
    """The stem of the task's own result file that ``file_name`` holds runs of: a salvage file's is the
    file it was salvaged from (so that the salvage of a salvage keeps the original's name)."""
    stem = Path(file_name).stem
    if stem.startswith(SALVAGE_PREFIX):
        stem = stem[len(SALVAGE_PREFIX):].rsplit("-", 1)[0]
    return stem


def salvage_pattern(file_name: str) -> str:
    """Glob (in the results directory) of the salvage files made from the result file ``file_name``,
    and from those in turn (all are named ``salvaged-<task file's stem>-<unix time>.h5``)."""
    return f"{SALVAGE_PREFIX}{glob.escape(_original_stem(file_name))}-*.h5"


def quarantine(path: Path, reason: str) -> tuple[Path, Path | None, int]:
    """Move an unreadable result file aside (never delete it) and salvage what can still be read.

    Returns (where it went, the salvage file or None, number of finished runs recovered). Runs
    that cannot be recovered are simply absent afterwards, so ``optbench submit`` trains them
    again (from their checkpoints where these survived).
    """
    qdir = path.parent / QUARANTINE_DIR
    qdir.mkdir(exist_ok=True)
    stamp = time.strftime('%Y%m%dT%H%M%S')
    aside = _move_to_free_name(path, lambda n: qdir / f"{path.name}.{stamp}{f'.{n}' if n else ''}")
    (qdir / f"{aside.name}.reason.txt").write_text(reason + "\n")
    base = f"{SALVAGE_PREFIX}{_original_stem(path.name)}-{int(time.time())}"
    partial = path.with_name(f".{base}.{os.getpid()}.partial")  # not a result file until complete (see below)
    partial.unlink(missing_ok=True)  # a leftover of a process with this pid that died while salvaging
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
                with h5py.File(partial, "a", locking=False) as dst:
                    ng = dst.require_group("runs").create_group(rid)
                    ng.create_dataset("evals", data=rows, maxshape=(None,), chunks=(64,))
                    for k, v in attrs.items():
                        ng.attrs[k] = v
                recovered += 1
    except Exception:
        pass
    if not recovered:
        partial.unlink(missing_ok=True)
        return aside, None, 0
    try:
        TaskFile(partial).index()  # so that status reads it the fast way
    except Exception:
        pass
    # only now under a result file's name: a half-written salvage file would read as damaged to an
    # `optbench submit` running meanwhile, which would move it aside in turn
    salvage = _move_to_free_name(partial, lambda n: path.with_name(f"{base}{f'.{n}' if n else ''}.h5"))
    return aside, salvage, recovered


def _move_to_free_name(src: Path, name: Callable[[int], Path]) -> Path:
    """Rename ``src`` to ``name(0)``, or ``name(1)``, … whichever does not exist, never replacing a file:
    two files quarantined in the same second (a task's file, then the new one it began) keep both."""
    for n in itertools.count():
        target = name(n)
        try:
            os.link(src, target)  # fails if target exists, atomically (a rename would replace it)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: check, then rename
            if target.exists():
                continue
            os.replace(src, target)
            return target
        src.unlink()
        return target
    raise AssertionError("unreachable")
