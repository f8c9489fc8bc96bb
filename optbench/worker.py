"""What runs inside one array task: train a chunk of runs, skipping finished ones.

:class:`ChunkRunner` is a submitit ``Checkpointable``: on Slurm's timeout or preemption signal
the training loop checkpoints the current run at a step boundary and submitit requeues the task
with the same arguments; the restarted task skips finished runs and resumes the interrupted one.

The runs train one after another in this process (:mod:`optbench.chunk`, which says what happens
to a run that diverges, fails or is killed), or, with the profile's ``runs_in_parallel`` above 1, in
that many processes at once (:mod:`optbench.parallel`). This module imports neither at its top:
submitit unpickles a :class:`ChunkRunner` in every task, and the parent of a parallel task trains
nothing, so it need not import pandas, h5py or torch.
"""
from __future__ import annotations

from typing import Any

import submitit

from optbench import startup


class ChunkRunner(submitit.helpers.Checkpointable):
    """Train ``run_ids`` of the study in ``study_dir`` into ``results/<task_name>.h5``."""

    def __call__(self, study_dir: str, task_name: str, run_ids: list[str],
                 options: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = dict(options or {})
        k = min(int(opts.get("runs_in_parallel") or 1), len(run_ids))
        if k > 1:
            from optbench.parallel import train_in_parallel

            startup.resume_collector()  # this process trains nothing; its parts import torch themselves
            return train_in_parallel(study_dir, task_name, run_ids, opts, k)
        startup.import_training_stack()  # torch and the chunk's modules, with the collector paused
        from optbench.chunk import train_chunk

        return train_chunk(study_dir, task_name, run_ids, opts)
