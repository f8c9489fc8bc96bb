"""The rule that keeps periodic I/O (epoch-end checkpoints, result-row writes) to a fraction of the time.

A write is due once the time since the last one, times ``fraction``, is at least what the last one
took: writes then cost at most ``fraction`` of the wall time, and long epochs (longer than
write-time / fraction) still get one every epoch. ``fraction >= 1``: always due. Nothing has been
written yet: due (the first write measures the cost). Used by the training loop for checkpoints and
by :class:`optbench.storage.RowWriter` for result rows, each with the profile's ``checkpoint_overhead``.
"""
from __future__ import annotations

from typing import Callable


class IOBudget:
    def __init__(self, fraction: float, clock: Callable[[], float]):
        self.fraction, self.clock = fraction, clock
        self.last = clock()  # when the last write ended (or the budget started)
        self.cost = 0.0  # seconds the last write took

    def due(self) -> bool:
        return self.fraction >= 1 or (self.clock() - self.last) * self.fraction >= self.cost

    def spend(self, write: Callable[[], object]) -> None:
        """Do ``write`` and remember when it ended and what it took."""
        t = self.clock()
        write()
        self.last = self.clock()
        self.cost = self.last - t
