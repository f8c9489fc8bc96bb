"""``optbench status``: what every run of a study is doing, from the result files alone."""
from __future__ import annotations

from pathlib import Path

from optbench import planner
from optbench.state import STATES, run_states


def print_status(study_dir: Path, verbose: bool = False) -> int:
    plan = planner.load_plan(study_dir, verify=False)
    states, bad = run_states(study_dir, plan)
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
        print(f"\n{len(req)} runs were requeued (max {int(req['requeues'].max())} times)")
    failed = states[states["state"] == "failed"]
    if len(failed):
        print(f"\nfailed runs ({len(failed)}):")
        for _, r in failed.head(None if verbose else 10).iterrows():
            print(f"  {r['run_id']} {r['problem']}/{r['optimizer']} attempts={r['attempts']} {r['file']}: {r['error']}")
    for path, err in bad:
        print(f"\nwarning: unreadable result file {path}: {err}")
    return 0
