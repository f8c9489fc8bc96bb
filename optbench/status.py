"""``optbench status``: what every run of a study is doing, from the result files alone."""
from __future__ import annotations

from pathlib import Path

from optbench import planner
from optbench.state import STATES, run_states


def task_logs(study_dir: Path) -> dict[str, Path]:
    """run_id -> stderr log of the last task it was submitted in (submitit's folder layout)."""
    from optbench.dispatch import ledger

    out: dict[str, Path] = {}
    for e in ledger(study_dir):
        for t in e["tasks"]:
            folder = study_dir / "submitit" / e["stamp"] / t["job_id"]
            logs = sorted(folder.glob("*_log.err"))
            if logs:
                for rid in t["run_ids"]:
                    out[rid] = logs[-1]
    return out


def print_status(study_dir: Path, verbose: bool = False, full_scan: bool = False) -> int:
    """``full_scan``: read every run's data in every result file (no scan cache, no file summaries)."""
    plan = planner.load_plan(study_dir)  # verified: a hand-edited plan is reported, not trusted
    # unchanged result files are not re-read; the others are read through their summaries
    states, bad = run_states(study_dir, plan, cache=not full_scan, summary=not full_scan)
    counts = states["state"].value_counts()
    total = len(states)
    done = int(counts.get("finished", 0) + counts.get("diverged", 0))
    print(f"study {plan['study'].iloc[0]}: {total} runs, {done} done ({100 * done / max(1, total):.1f} %)")
    for s in STATES:
        if counts.get(s, 0):
            print(f"  {s:<12} {counts[s]:>8}")
    by_problem = states.pivot_table(index="problem", columns="state", values="run_id", aggfunc="count", fill_value=0)
    print("\nby problem:\n" + by_problem.to_string())
    req = states[states["requeues"] > 0]
    if len(req):
        hist = req["requeues"].value_counts().sort_index()
        print(f"\nrequeues per run: " + ", ".join(f"{n}x: {c} runs" for n, c in hist.items()))
    failed = states[states["state"] == "failed"]
    if len(failed):
        logs = task_logs(study_dir)
        print(f"\nfailed runs ({len(failed)}):")
        for _, r in failed.head(None if verbose else 10).iterrows():
            print(f"  {r['run_id']} {r['problem']}/{r['optimizer']} attempts={r['attempts']} {r['file']}: {r['error']}")
            log = logs.get(r["run_id"])
            if log is not None and log.exists():
                tail = log.read_text(errors="replace").strip().splitlines()[-5:]
                print(f"    last lines of {log}:")
                for line in tail:
                    print(f"      {line}")
        if len(failed) > 10 and not verbose:
            print(f"  … and {len(failed) - 10} more (optbench status -v)")
    last = last_submission_line(study_dir)
    if last:
        print(f"\n{last}")
    for path, err in bad:
        print(f"\nwarning: unreadable result file {path}: {err}")
    return 0


def last_submission_line(study_dir: Path) -> str | None:
    """Where the study was last submitted, and with which profile: the one ``optbench submit DIR``
    continues with when given neither --profile nor --executor."""
    import time

    from optbench.dispatch import last_submission

    e = last_submission(study_dir)
    if e is None:
        return None
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["created"])) if e.get("created") else e.get("stamp", "?")
    source = e.get("profile_path") or "built-in"
    return (f"last submission: {when}, {len(e.get('tasks', []))} tasks to {e.get('executor', '?')}, "
            f"profile {e.get('profile', '?')} ({source})")
