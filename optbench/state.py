"""The state of every planned run, read from the result files (not from polling the scheduler).

States: ``finished`` and ``diverged`` (done: a curve to analyse), ``failed`` (an error; retried
by ``optbench submit`` up to the profile's limit), ``running`` (a live process holds the run's
lease), ``interrupted`` (started, no live holder: it resumes from its checkpoint when its task is
requeued or the study is re-submitted), ``planned`` (not started), ``waiting`` (a re-run whose
best setting is not known yet).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from optbench.leases import LEASE_DIR, RunLease
from optbench.storage import DONE, RESULTS_DIR, TaskFile, scan_results

STATES = ("finished", "diverged", "failed", "running", "interrupted", "planned", "waiting")


def run_states(study_dir: str | Path, plan: pd.DataFrame, cache: bool = False,
               summary: bool = False) -> tuple[pd.DataFrame, list]:
    """One row per planned run: state, file, attempts, requeues, error; and the unreadable files.

    ``cache`` and ``summary``: let :func:`~optbench.storage.scan_results` reuse its cache of unchanged
    result files and read the files' summaries instead of every run (``optbench status``). A run
    with no result entry is checked for a live lease only if its lease file exists (one directory
    listing instead of a ``stat`` per planned run).
    """
    found, bad = scan_results(study_dir, cache=cache, summary=summary)
    try:
        lease_files = set(os.listdir(Path(study_dir) / LEASE_DIR))
    except OSError:
        lease_files = set()
    out = plan[["run_id", "problem", "optimizer", "schedule", "budget", "kind", "resolved"]].copy()
    states, files, attempts, requeues, errors, n_evals = [], [], [], [], [], []
    for rid, resolved in zip(out["run_id"], out["resolved"]):
        e = found.get(rid)
        if e is None:
            st = "planned" if resolved else "waiting"
            if resolved and f"{rid}.lock" in lease_files and RunLease(study_dir, rid).is_held_elsewhere():
                st = "running"
            states.append(st)
            files.append("")
            attempts.append(0)
            requeues.append(0)
            errors.append("")
            n_evals.append(0)
            continue
        st = e["status"]
        if st == "running":
            if RunLease(study_dir, rid).is_held_elsewhere():
                st = "running"
            else:  # the run may have ended between the scan and the lease check: look again
                now = TaskFile(Path(study_dir) / RESULTS_DIR / e["file"]).status_of(rid)
                st = now if now in ("finished", "diverged", "failed") else "interrupted"
        states.append(st)
        files.append(e["file"])
        attempts.append(e["attempts"])
        requeues.append(e["requeues"])
        errors.append(e["error"])
        n_evals.append(e["n_evals"])
    out["state"] = states
    out["file"] = files
    out["attempts"] = attempts
    out["requeues"] = requeues
    out["error"] = errors
    out["n_evals"] = n_evals
    return out, bad


def is_done(state: str) -> bool:
    return state in DONE
