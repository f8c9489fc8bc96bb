"""Turn Slurm's signals into checkpoints taken at a safe point.

submitit's own USR2 handler pickles the job and requeues *inside the signal handler*, which can
fire in the middle of an optimizer step or an HDF5 write. We instead record the signal and let
the training loop act at the next step boundary: write the checkpoint, then hand over to
submitit's handler (requeue + exit) for USR2. SIGTERM (``scontrol requeue``, ``scancel``,
preemption after GraceTime) is answered the same way but without requeueing ourselves: Slurm
decides what happens next and the checkpoint makes sure no finished step is lost.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Callable


#: signals noted by optbench.launch before the task's Interrupt existed (a task that is still starting)
EARLY_SIGNALS: list[int] = []


def note_early(signum, frame) -> None:
    """The handler optbench.launch installs first thing: remember the signal for Interrupt.install."""
    EARLY_SIGNALS.append(signum)


class Interrupt:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def install(self) -> "Interrupt":
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._note)
        if EARLY_SIGNALS:  # it came while the task was starting: act on it like on one that comes now
            self.signum = EARLY_SIGNALS[-1]
            EARLY_SIGNALS.clear()
            print(f"optbench: {signal.Signals(self.signum).name} arrived while the task was starting; "
                  "checkpointing at the next step boundary", flush=True)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _note(self, signum, frame) -> None:
        self.signum = signum
        print(f"optbench: caught {signal.Signals(signum).name}; checkpointing at the next step boundary",
              flush=True)

    def act(self, save: Callable[[], None]) -> None:
        """Checkpoint, then requeue (USR2, through submitit) or exit (SIGTERM)."""
        save()
        signum = self.signum
        previous = self._previous.get(signum)  # type: ignore[arg-type]
        print(f"optbench: checkpoint written after {signal.Signals(signum).name}", flush=True)
        if signum == signal.SIGUSR2 and callable(previous) and previous is not note_early:
            previous(signum, None)  # submitit: pickle the task, scontrol requeue, sys.exit
            return
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(128 + signum)
