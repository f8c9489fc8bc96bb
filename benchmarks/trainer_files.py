"""``--trainer FILE`` for the benchmarks that compare versions of ``optbench/trainer.py`` in one process
(bench_step_intervals.py, bench_evaluation.py): the option, its check, and each file loaded as its own
module (it imports the current rest of ``optbench``, so old against new compares the trainer only)."""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType

CURRENT = Path(__file__).resolve().parents[1] / "optbench" / "trainer.py"


def add_trainer_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--trainer", action="append", type=Path,
                    help="a trainer.py to load (repeatable; default: the current one)")


def trainer_files(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[Path]:
    """The files ``--trainer`` named (the current trainer if none); a missing one is a usage error."""
    for f in args.trainer or ():
        if not f.is_file():
            ap.error(f"--trainer {f}: no such file")
    return args.trainer or [CURRENT]


def load_trainers(files: list[Path]) -> dict[str, ModuleType]:
    """Each file as its own module, keyed ``i:name`` (two files may share a name)."""
    modules = {}
    for i, f in enumerate(files):
        spec = importlib.util.spec_from_file_location(f"trainer_{i}", f)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules[f"{i}:{f.name}"] = module
    return modules
