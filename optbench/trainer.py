"""The one training loop.

It trains one run from its :class:`~optbench.record.RunRecord`, evaluating before training and after
every epoch, and leaves everything else to small collaborators: the problem's task (model, data,
loss), the optimizer factory, the schedule, a results sink and a checkpoint store.

Speed (see the README's performance section): data sit on the device and batches are made by
indexing; on a GPU the step losses stay on the device and are summed and read once per
``MB_FLUSH_STEPS_GPU`` steps (no host synchronisation per step; on a CPU reading a loss is not a
synchronisation, and adding it to a Python float is the cheapest sum); epoch-wise schedules touch
the learning rate once an epoch; evaluation runs under ``torch.inference_mode`` in large batches, or
in closed form where a problem has one (P1: ``Task.split_eval``); epoch-end checkpoints of very
short epochs are grouped so that writing them costs at most
``checkpoint_overhead`` of the time (:class:`~optbench.iobudget.IOBudget`; a P1 epoch trains in
~2.5 ms, its checkpoint takes ~1 ms).

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
from optbench.iobudget import IOBudget
from optbench.profiles import Resources
from optbench.record import RunRecord, derive_seed
from optbench.storage import EVAL_DTYPE, EVAL_FIELDS, eval_row, stack_rows


class Sink(Protocol):
    def rows_restored(self, rows: np.ndarray) -> None: ...
    def append(self, row: np.ndarray) -> None: ...


def evaluate(task, split) -> tuple[float, float]:
    """Mean loss and accuracy (NaN if the problem has none) over a whole split."""
    return _evaluate(task, [split])[0]


def evaluate_split(task, name: str) -> tuple[float, float]:
    """Mean loss and accuracy over the task's split ``name``: in closed form where the problem has one
    (``task.split_eval``, P1), else by :func:`evaluate`."""
    return evaluate_splits(task, [name])[0]


def evaluate_splits(task, names: list[str]) -> list[tuple[float, float]]:
    """:func:`evaluate_split` of each of ``names``, in that order, with the model switched to eval mode
    once and the device read once for all of them."""
    if task.split_eval is not None:
        return [task.split_eval(name) for name in names]
    return _evaluate(task, [task.splits[name] for name in names])


def _evaluate(task, splits: list) -> list[tuple[float, float]]:
    """Mean loss and accuracy of each split, evaluated in batches of ``task.eval_batch_size``.

    The batches' values stay tensors until the last split is done, then are read in one go. A running
    float64 sum on the device cost six small ops a batch, and switching the model's mode per split
    ~17 µs: on a CPU the digits MLP's three splits took 1.16× the bench's plainest evaluation (losses
    only, nothing read) that way, 1.03× now (benchmarks/bench_evaluation.py). Reading each batch would
    make a GPU wait once per batch. The sums are then done in Python floats with the same float64
    operations in the same order as the device's running sums (value × batch size, added batch by batch;
    float64 holds every float16/bfloat16/float32 value exactly), so the results are bit-identical to
    theirs."""
    if any(split[0].shape[0] == 0 for split in splits):
        raise ValueError("a split to evaluate has no examples")
    model = task.model
    was_training = model.training
    model.eval()
    eb = task.eval_batch_size
    losses, accs, sizes, counts = [], [], [], []  # per batch (all splits in order); counts: batches per split
    try:
        with torch.inference_mode():
            for split in splits:
                first = len(losses)
                for i in range(0, split[0].shape[0], eb):
                    batch = tuple(t[i:i + eb] for t in split)
                    loss, acc = task.loss(model, batch)
                    losses.append(loss)
                    accs.append(acc)
                    sizes.append(batch[0].shape[0])
                counts.append(len(losses) - first)
            given = [a for a in accs if a is not None]
            values = [torch.stack(losses)] + ([torch.stack(given)] if given else [])
            if any(v.dim() != 1 for v in values):  # one value per batch, or the sums below are wrong
                raise ValueError(f"task.loss must return 0-dim loss and accuracy tensors, got shapes "
                                 f"{tuple(losses[0].shape)} / {tuple(given[0].shape) if given else None}")
            read = torch.cat([v.double() for v in values]).tolist()  # the one read of the device
    finally:
        model.train(was_training)
    loss_values, acc_values = iter(read[:len(losses)]), iter(read[len(losses):])
    out, first = [], 0
    for split, k in zip(splits, counts):
        loss_sum = acc_sum = 0.0
        split_acc = False
        for m, acc in zip(sizes[first:first + k], accs[first:first + k]):
            loss_sum += next(loss_values) * m
            if acc is not None:
                acc_sum += next(acc_values) * m
                split_acc = True
        first += k
        n = split[0].shape[0]
        out.append((loss_sum / n, acc_sum / n if split_acc else math.nan))
    return out


#: step losses kept on a GPU before they are folded into the float64 sum (one stack + sum + read);
#: on a CPU (0) each loss is read and added as it comes: one op a step, the fewest
MB_FLUSH_STEPS_GPU = 256
MB_FLUSH_STEPS_CPU = 0


def _rows_for_checkpoint(rows: list[np.ndarray]) -> torch.Tensor:
    """The evaluation rows as one byte tensor: torch.save pickles a list of numpy rows at ~6 µs a
    row (650 µs for a 100-epoch run, three times the rest of a small model's checkpoint), and
    ``np.concatenate`` of them costs more still (:func:`~optbench.storage.stack_rows`)."""
    return torch.from_numpy(stack_rows(rows).view(np.uint8))


def _rows_from_checkpoint(saved) -> list[np.ndarray]:
    if isinstance(saved, torch.Tensor):
        table = saved.numpy().view(EVAL_DTYPE)
        return [table[i:i + 1].copy() for i in range(len(table))]
    return [np.asarray(r) for r in saved]  # checkpoints written before rows were packed


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def train_run(record: RunRecord, *, sink: Sink, checkpoint: Callable[[dict | None], dict | None],
              interrupt=None, device: str = "cpu", checkpoint_every_s: float = 300.0,
              checkpoint_every_epoch: bool = True,
              checkpoint_overhead: float = Resources.checkpoint_overhead) -> str:
    """Train ``record`` to the end; returns ``"finished"`` or ``"diverged"``.

    ``checkpoint(None)`` returns the saved state (or None); ``checkpoint(state)`` saves one.
    Checkpoints are written every ``checkpoint_every_s``, at a signal (``interrupt``) and, with
    ``checkpoint_every_epoch``, at the end of an epoch — unless the last checkpoint is so recent
    that writing another would spend more than ``checkpoint_overhead`` (a fraction) of the time since
    it: then the epoch is grouped with the next ones. Long epochs are therefore always checkpointed,
    and a killed worker loses at most ``1/checkpoint_overhead`` checkpoint-write times of work (200×
    about a millisecond for the smallest problems). ``checkpoint_overhead >= 1`` checkpoints every epoch.
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
    lr_per_step = record.schedule in schedules.STEP_SCHEDULES  # epoch-wise ones change at epoch starts only
    torch.manual_seed(derive_seed(record.seed, "dropout"))
    flush_steps = MB_FLUSH_STEPS_CPU if torch.device(device).type == "cpu" else MB_FLUSH_STEPS_GPU
    mb_sum = 0.0  # float64 sum of the epoch's step losses (float32 values: each addition is exact enough)
    mb_pending: list[torch.Tensor] = []  # step losses not yet folded into mb_sum
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
            torch.cuda.set_rng_state(state["cuda_rng"], device)  # the run's GPU's, also for "cuda:N"
        epoch, pos = state["epoch"], state["pos"]
        mb_sum = float(state["mb_sum"])
        # the pending losses are restored as they were, so they are folded in the same groups (and
        # roundings) as in an uninterrupted run: a resumed minibatch_loss is bit-identical
        mb_pending = [torch.tensor(v, dtype=torch.float32, device=device) for v in state.get("mb_pending", ())]
        mb_count = state["mb_count"]
        rows = _rows_from_checkpoint(state["rows"])
        elapsed = state["elapsed"]
        sink.rows_restored(stack_rows(rows))  # a checkpoint always holds at least the epoch-0 row
    t_start = time.time() - elapsed

    def snapshot() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None,
                "epoch": epoch, "pos": pos, "mb_sum": mb_sum, "mb_count": mb_count,
                "mb_pending": torch.stack(mb_pending).tolist() if mb_pending else [],
                "rows": _rows_for_checkpoint(rows), "elapsed": time.time() - t_start, "run_id": record.run_id}

    def fold_pending() -> None:
        nonlocal mb_sum
        if mb_pending:
            mb_sum += torch.stack(mb_pending).sum(dtype=torch.float64).item()
            mb_pending.clear()

    def record_eval(e: int) -> bool:
        fold_pending()
        # the losses are read first, which waits for the device (the last fold, if nothing is pending,
        # read the last step's): wall_time covers the training steps' device work (on a GPU the host
        # runs ahead of it), not just their launch
        values = {"epoch": e, "step": e * steps_per_epoch, "lr": lr0 * factor(e * steps_per_epoch),
                  "minibatch_loss": mb_sum / mb_count if mb_count else math.nan}
        values["wall_time"] = time.time() - t_start
        # the training split last: it is (or holds) the training data, which then stay in the CPU's
        # caches for the next epoch's steps (the first step after an evaluation was ~15 % slower)
        evaluated = evaluate_splits(task, ["valid", "test", "train_eval"])
        for name, (loss, acc) in zip(("valid", "test", "train"), evaluated):
            values[f"{name}_loss"], values[f"{name}_accuracy"] = loss, acc
        row = eval_row(values)
        rows.append(row)
        sink.append(row)
        return all(math.isfinite(values[k]) for k in ("train_loss", "valid_loss", "test_loss"))

    if not rows:
        if not record_eval(0):
            return "diverged"
    # epoch-end checkpoints at most checkpoint_overhead of the time (the clock is looked up at each
    # call: optbench bench replaces this module's ``time``)
    ckpts = IOBudget(checkpoint_overhead, lambda: time.time())

    def save_checkpoint() -> None:
        ckpts.spend(lambda: checkpoint(snapshot()))

    train = task.train
    g = torch.Generator()  # re-seeded every epoch: the same stream as a fresh generator with that seed
    data_seeds = [derive_seed(record.seed, f"data/{e}") for e in range(record.num_epochs)]
    lr = None
    while epoch < record.num_epochs:
        g.manual_seed(data_seeds[epoch])
        perm = torch.randperm(n, generator=g).to(device)
        # the epoch's batches as index views, all made here in one call: a slice made inside each step
        # cost ~7 µs there (P1, ~2 % of a 320 µs step: the slicing code runs cold after the step's
        # kernels); steady steps are 4-7 µs faster, but the split costs 20-30 µs here, so an epoch of P1 or
        # MNIST-1D gains within its noise (benchmarks/bench_step_intervals.py)
        batches = perm[:steps_per_epoch * bs].split(bs)
        if not lr_per_step and lr != (lr := lr0 * factor(epoch * steps_per_epoch)):
            _set_lr(opt, lr)
        while pos < steps_per_epoch:
            if lr_per_step and lr != (lr := lr0 * factor(epoch * steps_per_epoch + pos)):
                _set_lr(opt, lr)
            idx = batches[pos]
            batch = tuple(t[idx] for t in train)
            loss, _ = task.loss(model, batch)
            reg = task.regularizer()
            opt.zero_grad(set_to_none=True)
            (loss if reg is None else loss + reg).backward()
            opt.step()
            if flush_steps == 0:
                mb_sum += loss.item()
            else:
                mb_pending.append(loss.detach())
                if len(mb_pending) >= flush_steps:
                    fold_pending()
            mb_count += 1
            pos += 1
            if interrupt is not None and interrupt.requested:
                interrupt.act(lambda: checkpoint(snapshot()))
            if time.time() - ckpts.last > checkpoint_every_s:
                save_checkpoint()
        epoch, pos = epoch + 1, 0
        finite = record_eval(epoch)
        mb_sum = 0.0
        mb_count = 0
        if not finite:
            return "diverged"
        if epoch < record.num_epochs and checkpoint_every_epoch and ckpts.due():
            save_checkpoint()
        if epoch < record.num_epochs and interrupt is not None and interrupt.requested:
            interrupt.act(lambda: checkpoint(snapshot()))
    return "finished"


__all__ = ["train_run", "evaluate", "evaluate_split", "evaluate_splits", "EVAL_FIELDS"]
