"""The one training loop.

It trains one run from its :class:`~optbench.record.RunRecord`, evaluating before training and after
every epoch, and leaves everything else to small collaborators: the problem's task (model, data,
loss), the optimizer factory, the schedule, a results sink and a checkpoint store.

Speed (see the README's performance section): data sit on the device and batches are made by
indexing; the loss is accumulated on the device and read only at evaluation, so there is no host
synchronisation per step; evaluation runs under ``torch.inference_mode`` in large batches.

Determinism: the data order of epoch e is a permutation drawn from (seed, "data", e), so a resumed
run recomputes it instead of storing it; dropout draws from the global torch RNG, whose state is
checkpointed. A run resumed from a checkpoint reproduces an uninterrupted run bit for bit on CPU.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Protocol

import numpy as np
import torch

from optbench import optimizers, problems, schedules
from optbench.record import RunRecord, derive_seed
from optbench.storage import EVAL_FIELDS, eval_row


class Sink(Protocol):
    def rows_restored(self, rows: np.ndarray) -> None: ...
    def append(self, row: np.ndarray) -> None: ...


def evaluate(task, split) -> tuple[float, float]:
    """Mean loss and accuracy (NaN if the problem has none) over a whole split."""
    model = task.model
    was_training = model.training
    model.eval()
    n = split[0].shape[0]
    loss_sum = torch.zeros((), device=split[0].device, dtype=torch.float64)
    acc_sum = torch.zeros((), device=split[0].device, dtype=torch.float64)
    has_acc = False
    with torch.inference_mode():
        for i in range(0, n, task.eval_batch_size):
            batch = tuple(t[i:i + task.eval_batch_size] for t in split)
            loss, acc = task.loss(model, batch)
            m = batch[0].shape[0]
            loss_sum += loss.double() * m
            if acc is not None:
                acc_sum += acc.double() * m
                has_acc = True
    model.train(was_training)
    return float(loss_sum) / n, (float(acc_sum) / n if has_acc else math.nan)


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def train_run(record: RunRecord, *, sink: Sink, checkpoint: Callable[[dict | None], dict | None],
              interrupt=None, device: str = "cpu", checkpoint_every_s: float = 300.0,
              checkpoint_every_epoch: bool = True) -> str:
    """Train ``record`` to the end; returns ``"finished"`` or ``"diverged"``.

    ``checkpoint(None)`` returns the saved state (or None); ``checkpoint(state)`` saves one.
    """
    task = problems.build(record.problem, dict(record.problem_args), seed=derive_seed(record.seed, "init"),
                          device=device)
    model = task.model
    model.train()
    hp = record.hp
    lr0 = float(hp["lr"])
    opt = optimizers.make(record.optimizer, model.parameters(), **hp)
    n, bs = task.n_train, record.batch_size
    steps_per_epoch = n // bs  # the remainder is dropped each epoch, as DeepOBS does
    if steps_per_epoch == 0:
        raise ValueError(f"batch size {bs} larger than the {n} training examples of {record.problem}")
    factor = schedules.step_factor_fn(record.schedule, record.num_epochs, steps_per_epoch,
                                      dict(record.schedule_args) | hp)
    torch.manual_seed(derive_seed(record.seed, "dropout"))
    mb_sum = torch.zeros((), device=device, dtype=torch.float64)
    mb_count = 0
    epoch, pos = 0, 0
    rows: list[np.ndarray] = []
    elapsed = 0.0

    state = checkpoint(None)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if device.startswith("cuda") and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        epoch, pos = state["epoch"], state["pos"]
        mb_sum.fill_(state["mb_sum"])
        mb_count = state["mb_count"]
        rows = [np.asarray(r) for r in state["rows"]]
        elapsed = state["elapsed"]
        sink.rows_restored(np.concatenate(rows))  # a checkpoint always holds at least the epoch-0 row
    t_start = time.time() - elapsed

    def snapshot() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.startswith("cuda") else None,
                "epoch": epoch, "pos": pos, "mb_sum": float(mb_sum), "mb_count": mb_count,
                "rows": rows, "elapsed": time.time() - t_start, "run_id": record.run_id}

    def record_eval(e: int) -> bool:
        # minibatch_loss first: reading it waits for the device, so wall_time covers the training
        # steps' device work (on a GPU the host runs ahead of it), not just their launch
        values = {"epoch": e, "step": e * steps_per_epoch, "lr": lr0 * factor(e * steps_per_epoch),
                  "minibatch_loss": float(mb_sum) / mb_count if mb_count else math.nan}
        values["wall_time"] = time.time() - t_start
        for name, split in (("train", task.splits["train_eval"]), ("valid", task.splits["valid"]),
                            ("test", task.splits["test"])):
            values[f"{name}_loss"], values[f"{name}_accuracy"] = evaluate(task, split)
        row = eval_row(values)
        rows.append(row)
        sink.append(row)
        return all(math.isfinite(values[k]) for k in ("train_loss", "valid_loss", "test_loss"))

    if not rows:
        if not record_eval(0):
            return "diverged"
    last_ckpt = time.time()
    train = task.train
    g = torch.Generator()  # re-seeded every epoch: the same stream as a fresh generator with that seed
    lr = None
    while epoch < record.num_epochs:
        g.manual_seed(derive_seed(record.seed, f"data/{epoch}"))
        perm = torch.randperm(n, generator=g).to(device)
        while pos < steps_per_epoch:
            step = epoch * steps_per_epoch + pos
            if lr != (lr := lr0 * factor(step)):  # epoch schedules change it once an epoch
                _set_lr(opt, lr)
            idx = perm[pos * bs:(pos + 1) * bs]
            batch = tuple(t[idx] for t in train)
            loss, _ = task.loss(model, batch)
            reg = task.regularizer()
            opt.zero_grad(set_to_none=True)
            (loss if reg is None else loss + reg).backward()
            opt.step()
            mb_sum += loss.detach()  # float64 accumulator: the float32 loss is widened exactly, no extra kernel
            mb_count += 1
            pos += 1
            if interrupt is not None and interrupt.requested:
                interrupt.act(lambda: checkpoint(snapshot()))
            if time.time() - last_ckpt > checkpoint_every_s:
                checkpoint(snapshot())
                last_ckpt = time.time()
        epoch, pos = epoch + 1, 0
        finite = record_eval(epoch)
        mb_sum.zero_()
        mb_count = 0
        if not finite:
            return "diverged"
        if epoch < record.num_epochs and checkpoint_every_epoch:
            checkpoint(snapshot())
            last_ckpt = time.time()
        if epoch < record.num_epochs and interrupt is not None and interrupt.requested:
            interrupt.act(lambda: checkpoint(snapshot()))
    return "finished"


__all__ = ["train_run", "evaluate", "EVAL_FIELDS"]
