"""An array task's start-up without the garbage collector's full passes over what it imports.

Importing what a worker needs (submitit, h5py, pandas, torch, and the ``torch._dynamo`` that torch
imports at a process's first optimizer call) makes ~300,000 container objects. As they pile up,
Python's cyclic collector runs — 711 young, 65 middle and 5 full collections on this CPU, the full
ones ~110 ms each at the end — and frees next to nothing (20 objects in the 5 full ones): 0.46–0.57 s
of a 2.4–3.0 s start-up (measured with ``gc.callbacks``). Every later full collection, during
training, scans them all again (a 32-run P1 task: two, 116 ms each), and so does the interpreter's
exit (0.7–0.9 s).

So the collector is paused while a task starts — from the first line of :mod:`optbench.launch` on a
cluster, and inside :class:`~optbench.worker.ChunkRunner` for the other executors — and once the
training stack is imported, everything imported is frozen (:func:`gc.freeze`: moved to a
generation the collector never scans; it lives as long as the process anyway) and the collector is
turned on again, so it collects the runs' own garbage as before (the same 32-run task: 34 ms a full
collection). Reference counting frees objects as usual throughout; only cycles wait. The price: the
~9,000 objects in cycles that the imports leave as garbage (the young collections found them) are
frozen with the rest and kept for the life of the process: 5.7 MB more resident memory after the
imports (343 instead of 337.5 MB), instead of collections worth a second of every task.
"""
from __future__ import annotations

import gc


def pause_collector() -> None:
    """Turn the cyclic collector off until :func:`resume_collector` (the start of a task's imports)."""
    gc.disable()


_settled = False  # the collector was resumed once in this process: later calls change nothing


def resume_collector() -> None:
    """Freeze every object that exists now (the imports: long-lived) and turn the collector on. Once a
    process: a process that runs several chunks (the tests, a library caller) is frozen and resumed at
    its first only, so what it made later stays collectable."""
    global _settled
    if _settled:
        return
    _settled = True
    gc.freeze()
    gc.enable()


def import_training_stack() -> None:
    """Import torch and the training loop with the collector paused, make torch's lazy first-optimizer
    imports happen here as well (``zero_grad`` imports ``torch._dynamo`` on its first call: 0.9–1.4 s,
    once per process, whichever run would otherwise pay it), then :func:`resume_collector`. Once a
    process, as :func:`resume_collector`."""
    if _settled:
        return
    pause_collector()
    try:
        import torch

        from optbench import chunk, trainer  # noqa: F401  (the chunk's plan and result file; the optimizers,
        #                                      schedules, problem registry)

        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).zero_grad()
    finally:
        resume_collector()
