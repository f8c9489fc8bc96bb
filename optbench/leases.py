"""One lease per run, so that no run is ever trained by two processes at once.

A lease is an exclusive ``flock`` on ``leases/<run_id>.lock``. The kernel drops it when the
holder dies (``kill -9``, a lost node's NFS lock is recovered by the lock manager), so a crashed
task never blocks its runs. When a run ends, its lease file records the outcome and the result
file holding it, so a second task given the same run (two ``optbench submit`` at once, or a
re-submission racing a requeue) skips it without reading every result file.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

LEASE_DIR = "leases"


class RunLease:
    def __init__(self, study_dir: str | Path, run_id: str):
        self.path = Path(study_dir) / LEASE_DIR / f"{run_id}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lease without waiting; False if another live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def outcome(self) -> dict[str, Any] | None:
        """What the last holder recorded when the run ended, or None."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return None

    def record_outcome(self, **info: Any) -> None:
        assert self._fd is not None, "record_outcome without holding the lease"
        data = json.dumps(info).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def is_held_elsewhere(self) -> bool:
        """True if some live process holds the lease (we do not)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def __enter__(self) -> "RunLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
