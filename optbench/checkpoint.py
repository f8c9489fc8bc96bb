"""Atomic per-run checkpoints: write to a temporary file in the same directory, fsync, rename.

A checkpoint holds everything needed to continue a run bit for bit: model, optimizer, RNG states,
the position in the data order (epoch and step within the epoch), the on-device minibatch-loss
accumulator and the evaluation rows so far. The rows make a resume independent of which result
file the interrupted attempt wrote to.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHECKPOINT_DIR = "checkpoints"


class CheckpointStore:
    def __init__(self, study_dir: str | Path):
        self.dir = Path(study_dir) / CHECKPOINT_DIR

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.pt"

    def save(self, run_id: str, state: dict[str, Any]) -> None:
        import torch

        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path(run_id)
        tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def load(self, run_id: str) -> dict[str, Any] | None:
        import torch

        p = self.path(run_id)
        if not p.exists():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # a torn or foreign file: keep it for inspection, start over
            p.rename(p.with_name(p.name + ".unreadable"))
            print(f"optbench: checkpoint {p} unreadable ({type(e).__name__}: {e}); moved aside, run restarts")
            return None

    def remove(self, run_id: str) -> None:
        try:
            self.path(run_id).unlink()
        except FileNotFoundError:
            pass
