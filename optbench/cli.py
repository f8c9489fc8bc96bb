"""The ``optbench`` command: plan, submit, status, report.

Errors a user can cause print one line (``optbench: error: …``) and exit 2, with no traceback
and nothing written. ``plan``, ``status`` and ``report`` never import torch (login nodes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from optbench.errors import OptbenchError


def _print(msg: str) -> None:
    print(msg, flush=True)


def cmd_plan(args) -> int:
    from optbench import planner
    from optbench.study import load_study

    study = load_study(args.study)
    if args.dry_run or not args.output:
        df = planner.records_to_frame(planner.expand(study))
    else:
        df = planner.write_plan(study, args.output, progress=_print)
    print(planner.breakdown(df))
    if args.estimate:
        from optbench import estimate
        from optbench.profiles import load_profile

        device = estimate.load_device(args.device or estimate.default_device())
        profile = load_profile(args.profile)
        print()
        print(estimate.format_estimate(estimate.estimate(df, device, lambda p: profile.resources(p).runs_per_task),
                                       device, study.name))
    return 0


def cmd_bench(args) -> int:
    from optbench import bench

    study = None
    if args.study:
        from optbench.study import load_study

        study = load_study(args.study)
        names = bench.select_problems(args.problems or study.problems)
        if stray := [n for n in names if n not in study.problems]:
            raise OptbenchError(f"{', '.join(stray)}: not a problem of study {study.name!r} ({args.study})")
    else:
        names = bench.select_problems(args.problems)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    results = bench.run(names, steps=args.steps, seconds=args.seconds, repeats=args.repeats, device=device,
                        threads=args.threads, progress=_print, fit_batch=args.fit_batch, study=study,
                        precision=args.precision, cudnn_benchmark=args.cudnn_benchmark,
                        min_seconds=args.min_seconds)
    env = bench.environment(device)
    print(f"\n{env['device']}, {env['threads']} torch thread(s), torch {env['torch']}, {env['cpu']} "
          f"({env['cpus']} CPUs){', ' + env['gpu'] if 'gpu' in env else ''}; optimizer {bench.OPTIMIZER}, "
          f"{args.repeats} rounds{' or more (--min-seconds)' if args.min_seconds else ''}"
          + (f", {env['precision']}" if device.startswith("cuda") else ""))
    print(bench.format_table(results))
    print(bench.format_fits(results))
    print(bench.format_goals(results))
    if args.write_device:
        command = "optbench bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "optbench bench"
        start = bench.measure_task_start()
        print(f"array task start-up (interpreter + imports): {start:.2f} s")
        path = bench.write_device_profile(args.write_device, results, device, command, task_start_s=start)
        print(f"device profile written: {path}")
    return 0


def submit_profile(study_dir: Path, profile: str | None, executor: str | None):
    """The profile ``optbench submit`` uses: the one given; without ``--profile`` and ``--executor``,
    the one the study's last submission used.

    Why: re-submitting is routine (missing and failed runs, re-runs once tuning is done), and a
    submit with neither option means the local executor — which trains every run that is not done
    here, on the login node, and waits for them. A study submitted to Slurm before is therefore
    continued with the same profile file, or refused where that file is gone."""
    from optbench import dispatch
    from optbench.profiles import load_profile

    if profile is not None or executor is not None:
        return load_profile(profile, executor)
    last = dispatch.last_submission(study_dir)
    if last is None:
        return load_profile(None)
    path = last.get("profile_path")
    if path and Path(path).is_file():
        print(f"using the profile of the study's last submission: {path} (--profile or --executor to change it)",
              flush=True)
        return load_profile(path)
    if last.get("executor") == "slurm":
        gone = f" ({path}: not found)" if path else ""
        raise OptbenchError(f"{study_dir}: its last submission went to Slurm with profile "
                            f"{last.get('profile')!r}{gone}; pass --profile FILE (or --executor local to train "
                            f"the runs here, on this machine)")
    return load_profile(None)


def cmd_submit(args) -> int:
    from optbench import dispatch

    study_dir = Path(args.study_dir)
    profile = submit_profile(study_dir, args.profile, args.executor)
    while True:
        sub = dispatch.submit(study_dir, profile, progress=_print, dry_run=args.dry_run)
        print(sub.message, flush=True)
        if args.dry_run or not sub.jobs:
            break
        if not (args.wait or profile.executor == "local"):
            print(f"follow progress with: optbench status {study_dir}")
            break
        dispatch.wait(study_dir, sub, progress=_print, poll_s=args.poll)
        # a finished wave may have made re-runs resolvable: go round again until nothing is left
    return 0


def cmd_status(args) -> int:
    from optbench.status import print_status

    return print_status(Path(args.study_dir), verbose=args.verbose, full_scan=args.full_scan)


def cmd_report(args) -> int:
    from optbench import planner

    planner.plan_path(args.study_dir)
    from analysis.report import write_report

    try:
        path = write_report(args.study_dir, rule=args.rule, progress=_print)
    except RuntimeError as e:
        raise OptbenchError(str(e)) from None
    print(f"report written: {path.resolve()}")
    summary = path.parent / "summary.txt"
    if summary.exists():
        print(summary.read_text().rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="optbench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("plan", help="expand a study file into its run table")
    sp.add_argument("study", help="study file (TOML), e.g. jobs/quickstart.toml")
    sp.add_argument("-o", "--output", required=False, help="study directory to write (plan.h5 …)")
    sp.add_argument("--dry-run", action="store_true", help="print the counts, write nothing")
    sp.add_argument("--estimate", action="store_true",
                    help="also print the compute the study needs, per problem and in total, in device-hours")
    sp.add_argument("--device", default=None,
                    help="device profile for --estimate (default: slurm/devices/cpu-2core.toml)")
    sp.add_argument("--profile", default=None,
                    help="executor profile for --estimate: its runs_per_task sets how many array tasks pay the "
                         "start-up (default: the built-in one, 10 runs per task)")
    sp.set_defaults(func=cmd_plan)

    sp = sub.add_parser("submit", help="dispatch the runs that are not done (Slurm arrays or local processes)")
    sp.add_argument("study_dir")
    sp.add_argument("--executor", choices=["local", "slurm"], default=None,
                    help="override the profile's executor (default: the profile's, else local)")
    sp.add_argument("--profile", default=None,
                    help="executor profile, e.g. slurm/profiles/gpu-cluster.toml (default: the study's last "
                         "submission's; for a first submission, the local executor)")
    sp.add_argument("--wait", action="store_true",
                    help="block until done, submitting re-runs as their tuning results arrive (always on for local)")
    sp.add_argument("--dry-run", action="store_true", help="show the arrays, call no sbatch")
    sp.add_argument("--poll", type=float, default=5.0, help="seconds between progress lines with --wait")
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("status", help="counts of planned / running / finished / failed runs")
    sp.add_argument("study_dir")
    sp.add_argument("-v", "--verbose", action="store_true", help="list failed runs with their errors")
    sp.add_argument("--full-scan", action="store_true",
                    help="read every run's data in every result file, ignoring the scan cache and the files' "
                         "summaries (slow: about a minute for 50,000 runs)")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("bench", help="steps/s of optbench's loop vs a bare loop and a naive loop, per problem")
    sp.add_argument("--problems", nargs="+", default=None,
                    help="problem names, 'offline' (default: the problems needing no data files, P1 among them) "
                         "or 'all' (the dataset problems run on small fake data sets with their real models)")
    sp.add_argument("--steps", type=int, default=None,
                    help="timed training steps per loop and round (default: about --seconds worth); the dataset "
                         "problems get epochs of half of it, and at least three epochs are timed (their median "
                         "is the round's speed), so a round may time more steps than asked")
    sp.add_argument("--seconds", type=float, default=0.5, help="target seconds per loop and round (default 0.5)")
    sp.add_argument("--repeats", type=int, default=7, help="interleaved rounds (default 7)")
    sp.add_argument("--min-seconds", type=float, default=0.0, metavar="S",
                    help="more rounds than --repeats (up to 10x) for a problem whose rounds end sooner than S "
                         "seconds: the small problems then get many rounds in a run over every problem (default 0)")
    sp.add_argument("--threads", type=int, default=1, help="torch threads (default 1: one run per core)")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    sp.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                    help="GPU arithmetic, as the profile key `precision` sets it for the worker (default fp32)")
    sp.add_argument("--cudnn-benchmark", action="store_true",
                    help="let cuDNN time and pick its algorithms, as the profile key `cudnn_benchmark`")
    sp.add_argument("--write-device", default=None, metavar="FILE",
                    help="write (or update) a device profile for `optbench plan --estimate` from loop (a)'s speeds")
    sp.add_argument("--fit-batch", type=float, nargs="+", default=(), metavar="FACTOR",
                    help="also time loop (a) at these multiples of each problem's batch size (e.g. 0.125 4) and fit "
                         "step time = fixed + per-example x B for the cost model")
    sp.add_argument("--study", default=None, metavar="FILE",
                    help="measure the problems as this study file sets them up (its model settings; its largest "
                         "batch size, and its smallest for the step-time fit), for its --estimate")
    sp.set_defaults(func=cmd_bench)

    sp = sub.add_parser("report", help="write report.html, figures and tables")
    sp.add_argument("study_dir")
    sp.add_argument("--rule", choices=["last", "best"], default="last",
                    help="final performance: last evaluation or best-validation evaluation")
    sp.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "plan" and not args.dry_run and not args.output and not args.estimate:
            from optbench.study import load_study

            load_study(args.study)  # a missing or bad study file is the first thing to mend: say it first
            raise OptbenchError("plan: -o/--output DIR is required (or --dry-run, or --estimate)")
        return args.func(args)
    except OptbenchError as e:
        print(f"optbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("optbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
