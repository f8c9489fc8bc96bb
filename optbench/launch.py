"""Start an array task with Slurm's USR2 noted from its first line: ``python -u -m optbench.launch``.

Slurm may send USR2 (a time limit or a preemption is coming) to a task that is still starting. Until
submitit installs its handler — after the interpreter has started, imported submitit and unpickled
the job — Python's default for USR2 ends the process: Slurm marks the job FAILED and nothing
requeues it (no finished work is lost, and the next ``optbench submit`` re-sends the run, but the
requeue path is skipped). The Slurm executor therefore runs tasks through this module, which notes
the signal at once (:data:`optbench.interrupt.EARLY_SIGNALS`) and then hands over to submitit's own
entry point; the worker's :class:`~optbench.interrupt.Interrupt` finds the noted signal when it is
installed and requeues the task through submitit, as for a signal that comes later.

submitit appends its command to the configured interpreter, so this module is called as
``python -u -m optbench.launch -u -m submitit.core._submit FOLDER`` and runs the module after ``-m``.
Only the interpreter's own start and importing this module (``signal``, ``runpy``, ``os`` and the
light :mod:`optbench.interrupt`) remain unguarded: milliseconds instead of seconds.

It also pauses the garbage collector for the task's imports (:mod:`optbench.startup`); the worker
turns it on again once torch and the training loop are imported.
"""
from __future__ import annotations

import os
import runpy
import signal
import sys
import time

from optbench import interrupt, startup

#: tests only: hold the task this long after the handler is installed, so that a signal can be sent
#: into the start-up window on purpose
DELAY_ENV = "OPTBENCH_TEST_LAUNCH_DELAY_S"


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGUSR2, interrupt.note_early)
    startup.pause_collector()
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay > 0:
        time.sleep(delay)
    if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
        raise SystemExit(f"optbench.launch: expected '... -m MODULE ARGS', got {argv!r}")
    i = argv.index("-m")
    module = argv[i + 1]
    sys.argv = [module] + argv[i + 2:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
