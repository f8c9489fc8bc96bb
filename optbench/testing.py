"""Stand-ins for the training loop's collaborators, to check it without a task file or a signal.

Why in the package: the test suite and ``benchmarks/gpu_check.py`` (a script run on a GPU machine
that has the package but not the tests) both train runs into memory and interrupt them at a chosen
step to check that a resumed run reproduces an uninterrupted one. Imports torch only through the
trainer that uses these (numpy here).
"""
from __future__ import annotations

import numpy as np


class MemorySink:
    """The trainer's results sink, in memory: the rows of one run, in order."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def rows_restored(self, rows: np.ndarray) -> None:
        self.rows = [rows[i:i + 1] for i in range(len(rows))]

    def append(self, row: np.ndarray) -> None:
        self.rows.append(row)

    def array(self) -> np.ndarray:
        from optbench.storage import stack_rows

        return stack_rows(self.rows)


class Stop(Exception):
    """Raised by :class:`StopAtStep` after its checkpoint: the run ends as a requeued task's would."""


class StopAtStep:
    """An interrupt requested at the ``at``-th step of this attempt (never if ``at`` < 1): the loop
    checkpoints through ``act``, which then stops the run as a requeue would."""

    def __init__(self, at: int):
        self.at, self.steps = at, 0

    @property
    def requested(self) -> bool:
        self.steps += 1
        return self.steps == self.at

    def act(self, save) -> None:
        save()
        raise Stop
