"""``optbench bench``: how close a run gets to the hardware limit, per problem.

For each problem, three loops train the *same* model (same initialisation), on the same data held
on the same device, with the same optimizer (Adam, TF1 rule, defaults) and batch size, in the same
process, interleaved over ``repeats`` rounds (the best round of each loop is kept: the machine is
shared and noisy, and the best round is the one least disturbed):

(a) **optbench** — :func:`optbench.trainer.train_run` on a run record, exactly as the worker calls
    it (cosine schedule, a not-installed :class:`~optbench.interrupt.Interrupt`, the worker's
    epoch-end checkpoints written to disk by the real :class:`~optbench.checkpoint.CheckpointStore`
    in a temporary directory, with the profile default ``checkpoint_overhead``).
    Timed: the training steps only. The first epoch is a warm-up; for every later epoch the time
    from the end of the previous evaluation (the sink's ``append``) to the start of the next one
    (the row's ``wall_time``, taken after the device is synchronised) is summed. So the per-epoch
    permutation, the learning-rate updates, the on-device loss accumulation and the epoch-end
    checkpoints are inside the timing, the evaluations are not (they are reported separately).
    Grouped checkpoints fall into a few epochs only, which a median would skip: their time is
    spread evenly over all timed epochs instead.
(b) **bare** — the limit: per step only ``loss = task.loss(model, x[idx])`` (+ the problem's L2
    term), ``zero_grad``, ``backward``, ``step``, and per epoch a fresh random permutation (which
    any loop needs to draw its batches); one synchronisation at the end of each timed chunk. No
    learning-rate schedule, no loss accumulation, no checkpoints, no evaluations.
(b') **bare+eval** — loop (b), and after every epoch (untimed) the protocol's evaluation of the
    three splits done the plainest way (``task.loss`` under ``inference_mode`` in the problem's
    evaluation batches, in optbench's order; P1's closed form, ``task.split_eval``, where the problem
    has one, as optbench does). Its training steps pay what any loop that evaluates every epoch pays
    after an evaluation (caches, branch predictors and allocator refilled for the training code: on
    MNIST-1D ~300 µs for the first step after it); (a)/(b') is what is left for optbench's own
    bookkeeping. The goal is stated against (b); (b') says where a gap comes from.
(c) **naive** — as older benchmark suites write it: a ``torch.utils.data.DataLoader`` over a
    ``TensorDataset`` (shuffle, drop_last), ``loss.item()`` every step, and evaluation in eager
    Python with the training batch size, ``.item()`` per batch and neither ``no_grad`` nor
    ``inference_mode`` — after every epoch, as the protocol evaluates (timed apart from the steps,
    like (a)'s: its steps pay what evaluating costs the steps after it, as (a)'s do).

Two ratios against (c): ``a/c``, training steps only, and ``a/c run``, the time an epoch of a
protocol run takes — the problem's real steps per epoch at each loop's step speed plus one
evaluation of the real splits at each loop's evaluation speed per example (:func:`protocol_epoch_s`).
The naive loop's evaluation in eager Python is part of what it costs: a user waits for the run,
evaluations included. For the problems whose data the bench uses as they
are (P1, the digits, MNIST-1D and their variants) the bench's epochs and splits are the real ones, so
``a/c run`` is what was measured; for the others (the dataset problems, the char-RNN, the token and
transformer LMs, whose data the bench cuts short) it scales the measured speeds to a real run's sizes
— the published data sets, or the registry's arguments for the synthetic and text problems — as the
cost model does. On a CPU it is conservative where (a) evaluates in batches larger than the bench's
splits (the image problems: batches of 1,000, bench splits of one training batch): (a)'s per-batch
overhead is scaled up with the examples, (c)'s batches are the same size in the bench and a run. On a
GPU, where that overhead matters, the splits hold a whole evaluation batch (:func:`make_setup`).

The dataset problems (P2–P8) are measured with their real model sizes on small fake data sets in
the real file formats (:mod:`optbench.problems.fake_data`) written into a temporary directory:
steps per second depend on the model, batch size and device, not on how many examples exist.
Evaluation cost is reported per evaluated example (``eval_examples_per_s``), which is what the
cost model (:mod:`optbench.estimate`) scales to the real split sizes.
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

LOOPS = ("optbench", "bare", "bare+eval", "naive")
OPTIMIZER = "adam"
SCHEDULE = "cosine"


def offline_problems() -> list[str]:
    from optbench import problems

    return [n for n, s in problems.PROBLEMS.items() if s.dataset is None]


def select_problems(names: Sequence[str] | None) -> list[str]:
    """``None``/``["offline"]``: the problems that need no data files (P1 among them); ``["all"]``: every one."""
    from optbench import problems

    if not names or list(names) == ["offline"]:
        return offline_problems()
    out: list[str] = []
    for n in names:
        if n == "all":
            out += [p for p in problems.PROBLEMS if p not in out]
        elif n == "offline":
            out += [p for p in offline_problems() if p not in out]
        else:
            problems.get(n)  # raises StudyError with a suggestion
            if n not in out:
                out.append(n)
    return out


# ------------------------------------------------------------------ problem set-up
@dataclasses.dataclass
class Setup:
    problem: str
    args: dict[str, Any]  # problem arguments (the spec's, with data location and sizes overridden)
    batch_size: int
    steps_per_epoch: int
    timed_epochs: int  # loop (a) trains 1 + timed_epochs epochs; the first is a warm-up

    @property
    def timed_steps(self) -> int:
        return self.steps_per_epoch * self.timed_epochs

    @property
    def warmup_steps(self) -> int:
        return self.steps_per_epoch


def sized_args(problem: str, steps_per_epoch: int, data_dir: Path, batch_size: int | None = None,
               overrides: Mapping[str, Any] | None = None, eval_batches: int = 1) -> dict[str, Any]:
    """Problem arguments giving about ``steps_per_epoch`` training steps per epoch (real model sizes);
    the dataset problems get fake files of that size in ``data_dir``, with evaluation splits of
    ``eval_batches`` batches each.

    Problems whose data set size is part of the problem and small (P1's 1,000 draws, the digits,
    MNIST-1D) keep their data: the benchmark then runs as many epochs as it needs.
    """
    from optbench import problems
    from optbench.problems import fake_data

    spec = problems.get(problem)
    args = {**spec.args, **dict(overrides or {})}  # a study's settings (model sizes); the data sizes are set below
    bs = batch_size or spec.batch_size
    n = bs * steps_per_epoch
    n_eval = bs * eval_batches
    if spec.dataset == "tolstoi":
        seq = int(args["seq_len"])
        n_valid = n_eval * seq
        train_chars = n_valid + n * seq + 1
        total = math.ceil(train_chars / 0.8) + 1
        fake_data.write_tolstoi(data_dir / "tolstoi", total + seq)
        args.update(data_dir=str(data_dir), n_valid=n_valid, train_eval_size=n_valid, max_train=n)
    elif spec.dataset is not None:
        fake_data.write_fake(spec.dataset, data_dir, n_train=n_eval + n, n_test=n_eval)
        args.update(data_dir=str(data_dir), n_valid=n_eval, train_eval_size=n_eval, max_train=n)
    if spec.dataset is not None:
        from optbench.problems import datasets

        datasets.clear_cache()  # the readers cache per folder: forget the files this one replaced
    if "num_chars" in args:  # the offline char-RNN: a prefix of the text
        seq = int(args["seq_len"])
        args["num_chars"] = math.ceil((n * seq + 1) / 0.8) + seq + 1
    elif "n_train_tokens" in args:
        args["n_train_tokens"] = n * int(args["seq_len"]) + 1
    return args


#: a loop's speed in a round is that of its median epoch: with three or more, one epoch disturbed by the
#: run's first checkpoint (loop (a) writes it before its first timed epoch; on F-MNIST 2c2d it is 39 MB,
#: which evicts the caches) or by the machine does not decide the round. With two 2-step epochs
#: (the published problems' default here) F-MNIST 2c2d measured a/b 0.87 and 0.94; with 6-step ones 0.97.
MIN_TIMED_EPOCHS = 3


def make_setup(problem: str, steps: int, data_dir: Path, device: str, batch_size: int | None = None,
               overrides: Mapping[str, Any] | None = None, full_eval_batch: bool | None = None) -> Setup:
    """The bench's problem set-up: about ``steps`` timed steps, in at least :data:`MIN_TIMED_EPOCHS` epochs.

    ``full_eval_batch`` (default: on a GPU): the fake validation and test splits of the dataset problems
    hold at least one evaluation batch each (1,000 images for the image problems) instead of one
    training batch (the training-evaluation split is drawn from the bench's short training split), so
    that the evaluation speed per example — which the cost model and ``a/c run`` scale to the real
    splits — is measured at the batch size a real run evaluates in. A GPU evaluates a batch of 128
    images at a fraction of its speed at 1,000; on a CPU the difference is small and the larger splits
    would cost seconds of every round."""
    import torch

    from optbench import problems

    spec = problems.get(problem)
    bs = batch_size or spec.batch_size
    target = max(1, math.ceil(steps / 2))
    args = sized_args(problem, target, data_dir, bs, overrides)
    task = problems.build(problem, args, seed=0, device=device)
    if full_eval_batch is None:
        full_eval_batch = torch.device(device).type == "cuda"
    if full_eval_batch and spec.dataset is not None and task.eval_batch_size > bs:
        # larger evaluation splits, the same training split (so the same n_train: no second build)
        args = sized_args(problem, target, data_dir, bs, overrides, eval_batches=math.ceil(task.eval_batch_size / bs))
    spe = task.n_train // bs
    if spe < 1:
        raise ValueError(f"{problem}: {task.n_train} training examples, fewer than one batch of {bs}")
    timed_epochs = max(MIN_TIMED_EPOCHS, math.ceil(steps / spe))
    return Setup(problem, args, bs, spe, timed_epochs)


def probe_step_seconds(problem: str, data_dir: Path, device: str, batch_size: int | None = None,
                       overrides: Mapping[str, Any] | None = None) -> float:
    """Seconds per step of the bare loop, roughly (1 warm-up step, then 2 timed): to size the benchmark."""
    setup = make_setup(problem, 4, data_dir, device, batch_size, overrides)
    bare = BareLoop(setup, device)
    bare.run(1)
    return bare.run(2) / 2


# ------------------------------------------------------------------ the three loops
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _record(setup: Setup):
    from optbench import optimizer_specs
    from optbench.record import RunRecord, canonical_items

    spec = optimizer_specs.get(OPTIMIZER)
    hp = canonical_items({k: float(v) for k, v in spec.setting(spec.defaults).items()})
    return RunRecord(study="bench", problem=setup.problem, optimizer=OPTIMIZER, schedule=SCHEDULE, budget="oneshot",
                     kind="oneshot", trial=-1, seed=42, batch_size=setup.batch_size,
                     num_epochs=1 + setup.timed_epochs, hparams=hp, problem_args=canonical_items(setup.args))


def _task_and_optimizer(setup: Setup, device: str):
    """The task and optimizer exactly as train_run builds them for :func:`_record` (same init)."""
    from optbench import optimizers, problems
    from optbench.record import derive_seed

    rec = _record(setup)
    task = problems.build(setup.problem, dict(rec.problem_args), seed=derive_seed(rec.seed, "init"), device=device)
    task.model.train()
    opt = optimizers.make(OPTIMIZER, task.model.parameters(), **rec.hp)
    return task, opt


def n_eval_examples(task) -> int:
    return sum(int(task.splits[k][0].shape[0]) for k in ("train_eval", "valid", "test"))


# The clock every loop is timed with: "wall" (time.perf_counter, the default) or "cpu" (CPU time of
# this process; with one torch thread only). CPU time was tried as the default on this shared 2-core
# VM and rejected: it varies as much as wall time under load (the other vCPU's work slows ours), and
# it occasionally under-counts whole runs by 3-30x.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
_clock: Callable[[], float] = time.perf_counter


class _TimeModule:
    """Stands in for the ``time`` module inside :mod:`optbench.trainer` while (a) is measured, so
    that its ``wall_time`` stamps come from the benchmark's clock."""

    def __init__(self, clock: Callable[[], float]):
        self.time = clock

    def __getattr__(self, name: str):
        return getattr(time, name)


def epoch_chunks(t0: float, walls: Sequence[float], appended: Sequence[float],
                 saves: Sequence[tuple[int, float]],
                 writes: Sequence[tuple[int, float]] = ()) -> tuple[list[float], float]:
    """Loop (a)'s training time of each timed epoch (2, 3, …) and its per-run I/O seconds.

    ``walls[e]``: the row of epoch e's ``wall_time`` (from ``t0``, taken before its evaluation);
    ``appended[e]``: when that row reached the sink (after the evaluation); ``saves`` and
    ``writes``: (epoch, seconds) of each epoch-end checkpoint and each write of rows to the result
    file, made after the row of that epoch, so inside the next epoch's time. Per run: the first
    checkpoint and the writes outside the timed epochs (the first row's, the last rows').
    """
    epochs = len(walls) - 1
    chunks = [(t0 + walls[e]) - appended[e - 1] for e in range(2, epochs + 1)]
    # The first epoch-end checkpoint is always written (its cost is what the grouping of the later
    # ones is measured against), once per run, and it falls into the first timed epoch: a per-run
    # cost like the set-up, not a per-step one — moved there, or a bench of two or three short
    # epochs would charge a whole checkpoint to each step of one of them.
    n_first = 1 if saves and saves[0][0] == 1 else 0
    first = saves[0][1] if n_first else 0.0
    chunks[0] -= first
    # The later (grouped) checkpoints land in one epoch in tens: a median over the epochs would
    # leave them out, so each timed epoch carries an equal share of them instead (a checkpoint
    # written after epoch e falls into the chunk of epoch e + 1, chunks[e - 1]).
    # Rows are written to the result file in groups too: spread the same way.
    later = [(e, s) for e, s in [*saves[n_first:], *writes] if 1 <= e <= epochs - 1]
    for e, s in later:
        chunks[e - 1] -= s
    share = sum(s for _, s in later) / len(chunks)
    per_run = first + sum(s for e, s in writes if not 1 <= e <= epochs - 1)
    return [c + share for c in chunks], per_run


def measure_optbench(setup: Setup, device: str, resources: "Resources | None" = None) -> dict[str, list[float]]:
    """Loop (a): train_run; the time of each epoch's training steps (epochs 2..), of each evaluation,
    and of the run's set-up (building the task and the optimizer: from the call to the first checkpoint
    lookup; plus the first epoch-end checkpoint and the row writes outside the timed epochs).

    As in the worker, the rows go to a real result file through :class:`optbench.storage.RowWriter`
    (in groups; all of them before each checkpoint) and the checkpoints to a real CheckpointStore,
    with the checkpoint settings of ``resources`` (default: the profile defaults)."""
    from optbench import trainer
    from optbench.checkpoint import CheckpointStore
    from optbench.interrupt import Interrupt
    from optbench.profiles import Resources
    from optbench.storage import RowWriter, TaskFile

    appended: list[float] = []
    rows: list[Any] = []
    started: list[float] = []
    clock = _clock
    defaults = resources if resources is not None else Resources()
    record = _record(setup)
    ckpt_dir = tempfile.TemporaryDirectory(prefix="optbench-bench-ckpt-")
    store = CheckpointStore(ckpt_dir.name)
    saves: list[tuple[int, float]] = []  # (epoch, seconds) of each checkpoint written
    writes: list[tuple[int, float]] = []  # (epoch of the last row, seconds) of each write of rows

    class TimedFile(TaskFile):
        def append(self, run_id, new_rows):
            t = clock()
            n = super().append(run_id, new_rows)
            writes.append((len(rows) - 1, clock() - t))
            return n

    tf = TimedFile(Path(ckpt_dir.name) / "results.h5")
    tf.begin_run(record.run_id, record.to_json(), {})
    writer = RowWriter(tf, record.run_id, defaults.checkpoint_overhead)

    class Sink:
        def rows_restored(self, r):  # never called: there is no checkpoint to resume from
            raise AssertionError

        def append(self, row):
            appended.append(clock())
            rows.append(row)
            writer.append(row)

    def checkpoint(state):
        if state is None:
            started.append(clock())  # train_run sets t_start right after this call
        else:
            writer.flush()  # the worker writes the waiting rows first
            t = clock()
            store.save(record.run_id, state)
            saves.append((state["epoch"], clock() - t))
        return None

    real_time = trainer.time
    trainer.time = _TimeModule(clock)
    called = clock()
    try:
        status = trainer.train_run(record, sink=Sink(), checkpoint=checkpoint, interrupt=Interrupt(),
                                   device=device, checkpoint_every_s=1e9,
                                   checkpoint_every_epoch=defaults.checkpoint_every_epoch,
                                   checkpoint_overhead=defaults.checkpoint_overhead)
        writer.flush()  # the worker's write of the last rows at the run's end
    finally:
        trainer.time = real_time
        ckpt_dir.cleanup()
    t0 = started[0]
    walls = [float(r["wall_time"][0]) for r in rows]
    epochs = len(rows) - 1
    if status != "finished" or epochs < 2:
        raise RuntimeError(f"{setup.problem}: benchmark run {status} after {epochs} epochs")
    chunks, per_run = epoch_chunks(t0, walls, appended, saves, writes)
    return {"chunks": chunks, "eval": [appended[e] - (t0 + walls[e]) for e in range(1, epochs + 1)],
            "setup": [t0 - called + per_run]}


class BareLoop:
    """Loop (b): forward, backward, step — and the one thing any correct loop must add: a fresh
    random permutation of the training set every epoch, sliced into batches (drawn with one reused
    generator, the cheapest way)."""

    def __init__(self, setup: Setup, device: str):
        import torch

        self.setup, self.device = setup, device
        self.task, self.opt = _task_and_optimizer(setup, device)
        self.g = torch.Generator().manual_seed(0)
        self.n = self.task.n_train
        self.batches: list = []

    def run(self, steps: int) -> float:
        import torch

        task, opt, model, train = self.task, self.opt, self.task.model, self.task.train
        bs, n, g, device = self.setup.batch_size, self.n, self.g, self.device
        _sync(device)
        t = _clock()
        for _ in range(steps):
            if not self.batches:
                perm = torch.randperm(n, generator=g).to(device)
                self.batches = [perm[i * bs:(i + 1) * bs] for i in range(n // bs)][::-1]
            idx = self.batches.pop()
            loss, _ = task.loss(model, tuple(x[idx] for x in train))
            reg = task.regularizer()
            opt.zero_grad(set_to_none=True)
            (loss if reg is None else loss + reg).backward()
            opt.step()
        _sync(device)
        return _clock() - t


    def evaluate(self) -> None:
        """The protocol's evaluation of the three splits, the plainest way (loop (b'), untimed): the
        loss of each evaluation batch under ``inference_mode``, in the order optbench evaluates them
        (the training split last), nothing read back but one synchronisation; the problem's closed
        form where it has one (P1)."""
        import torch

        task, model, eb = self.task, self.task.model, self.task.eval_batch_size
        if task.split_eval is not None:  # the problem's evaluation is a closed form (P1): the same one
            for name in ("valid", "test", "train_eval"):
                task.split_eval(name)
            return
        model.eval()
        with torch.inference_mode():
            for name in ("valid", "test", "train_eval"):
                split = task.splits[name]
                for i in range(0, split[0].shape[0], eb):
                    task.loss(model, tuple(t[i:i + eb] for t in split))
        model.train()
        _sync(self.device)


def measure_bare(setup: Setup, device: str) -> dict[str, list[float]]:
    bare = BareLoop(setup, device)
    bare.run(setup.warmup_steps)
    return {"chunks": [bare.run(setup.steps_per_epoch) for _ in range(setup.timed_epochs)]}


def measure_bare_eval(setup: Setup, device: str) -> dict[str, list[float]]:
    """Loop (b'): loop (b) with the protocol's evaluation after every epoch, outside the timing."""
    bare = BareLoop(setup, device)
    bare.run(setup.warmup_steps)
    chunks = []
    for _ in range(setup.timed_epochs):
        bare.evaluate()
        chunks.append(bare.run(setup.steps_per_epoch))
    return {"chunks": chunks}


def measure_naive(setup: Setup, device: str) -> dict[str, list[float]]:
    """Loop (c): DataLoader over a TensorDataset, ``.item()`` per step, eager evaluation after every epoch."""
    from torch.utils.data import DataLoader, TensorDataset

    task, opt = _task_and_optimizer(setup, device)
    model = task.model
    loader = DataLoader(TensorDataset(*task.train), batch_size=setup.batch_size, shuffle=True, drop_last=True)
    batches = iter(())
    losses: list[float] = []

    def train(steps: int) -> float:
        nonlocal batches
        t = _clock()
        for _ in range(steps):
            batch = next(batches, None)
            if batch is None:  # a new epoch
                model.train()
                batches = iter(loader)
                batch = next(batches)
            loss, _ = task.loss(model, tuple(batch))
            reg = task.regularizer()
            opt.zero_grad()
            (loss if reg is None else loss + reg).backward()
            opt.step()
            losses.append(loss.item())
        return _clock() - t

    def evaluate() -> float:
        t = _clock()
        model.eval()
        for name in ("train_eval", "valid", "test"):
            total, count = 0.0, 0
            for batch in DataLoader(TensorDataset(*task.splits[name]), batch_size=setup.batch_size):
                loss, acc = task.loss(model, tuple(batch))
                m = len(batch[0])
                total += loss.item() * m
                if acc is not None:
                    acc.item()
                count += m
        model.train()
        return _clock() - t

    train(setup.warmup_steps)
    evals = [evaluate()]
    chunks = []
    for _ in range(setup.timed_epochs):
        chunks.append(train(setup.steps_per_epoch))
        evals.append(evaluate())
    return {"chunks": chunks, "eval": evals}


MEASURE: dict[str, Callable[[Setup, str], dict[str, list[float]]]] = {
    "optbench": measure_optbench, "bare": measure_bare, "bare+eval": measure_bare_eval, "naive": measure_naive}


# ------------------------------------------------------------------ driver
@dataclasses.dataclass
class StepFit:
    """Seconds per step of loop (a) at several batch sizes and the line ``fixed + per_example × B``
    through them (least squares, both terms kept >= 0): what the cost model needs to price a study
    whose batch sizes differ from the problem's default."""
    batch_sizes: list[int]
    step_s: list[float]
    fixed: float
    per_example: float


def fit_step_time(batch_sizes: Sequence[int], step_s: Sequence[float]) -> StepFit:
    import numpy as np

    b, t = np.asarray(batch_sizes, float), np.asarray(step_s, float)
    if len(set(batch_sizes)) < 2:
        raise ValueError("a step-time fit needs at least two batch sizes")
    slope, intercept = np.polyfit(b, t, 1)
    if intercept < 0:  # no fixed cost measurable: proportional (through the origin)
        intercept, slope = 0.0, float(b @ t / (b @ b))
    elif slope < 0:  # slower at smaller batches (noise): a constant step time
        intercept, slope = float(t.mean()), 0.0
    return StepFit([int(x) for x in batch_sizes], [float(x) for x in step_s], float(intercept), float(slope))


@dataclasses.dataclass
class Result:
    problem: str
    batch_size: int
    n_params: int
    steps_per_epoch: int
    timed_steps: int  # per loop and round
    eval_examples: int
    steps_per_s: dict[str, float]  # loop -> steps/s in its best round (median epoch-sized chunk of the round)
    eval_s: dict[str, float]  # loop -> its fastest evaluation ("optbench", "naive")
    ratios: dict[str, float]  # "a/b", "a/b'", "a/c", "a/c run": median over rounds of the rounds' ratios (paired)
    rounds: int
    setup_s: float = math.nan  # per run: building the task and optimizer + the first checkpoint (fastest round of (a))
    fit: StepFit | None = None  # loop (a)'s step time over batch sizes (``--fit-batch``)
    key: str = ""  # the device profile's name for it (estimate.speed_key): the problem, or problem@digest
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # a study's problem settings
    real: tuple[int, int] | None = None  # a real run's steps per epoch and evaluated examples (None: no size model)

    @property
    def a_over_b(self) -> float:
        return self.ratios["a/b"]

    @property
    def a_over_b_eval(self) -> float:
        return self.ratios["a/b'"]

    @property
    def a_over_c(self) -> float:
        return self.ratios["a/c"]

    @property
    def a_over_c_run(self) -> float:
        return self.ratios.get("a/c run", math.nan)

    @property
    def eval_examples_per_s(self) -> float:
        return self.eval_examples / self.eval_s["optbench"]


def protocol_epoch_s(steps_per_epoch: int, steps_per_s: float, eval_s: float, eval_scale: float) -> float:
    """Seconds one epoch of a protocol run takes in a loop: its training steps at the loop's step speed,
    then one evaluation — the bench's evaluation time ``eval_s`` times ``eval_scale`` (a real run's
    evaluated examples over the bench's: evaluation time is proportional to the examples)."""
    return steps_per_epoch / steps_per_s + eval_s * eval_scale


def real_sizes(problem: str, batch_size: int, overrides: Mapping[str, Any] | None = None) -> tuple[int, int] | None:
    """A real run's steps per epoch and evaluated examples (train_eval + valid + test) at ``batch_size``,
    with the published data sizes (:func:`optbench.estimate.problem_sizes`); None without a size model."""
    from optbench import estimate

    try:
        sizes = estimate.problem_sizes(problem, overrides)
    except Exception:  # no size model for this problem
        return None
    return sizes.n_train // batch_size, sizes.eval_examples


def bench_problem(problem: str, *, steps: int | None, seconds: float, repeats: int, device: str,
                  data_dir: Path, progress: Callable[[str], None] = print,
                  fit_batch: Sequence[float] = (), batch_size: int | None = None,
                  fit_sizes: Sequence[int] = (), overrides: Mapping[str, Any] | None = None,
                  min_seconds: float = 0.0, max_rounds: int | None = None) -> Result:
    """Measure the three loops on one problem in ``repeats`` interleaved rounds.

    ``min_seconds``: rounds go on past ``repeats`` until the problem's rounds have taken this long (at
    most ``max_rounds``, default 10 × ``repeats``). Why: a run over every problem takes its length from
    the CNNs (minutes a round), while a round of P1 takes a second and its ratios need many rounds to
    settle (imbalanced digits' a/b read 0.91 in 3 rounds, 0.97 in 17), and many of them cost little.

    A loop's time is split into epoch-sized chunks (``steps_per_epoch`` steps: one epoch of (a));
    its speed in a round is that of its median chunk. Ratios: the median over rounds of the ratio of
    the loops' speeds *in the same round* (the loops of one round run back to back and see the same
    load on a shared machine). Absolute speeds (for the cost model): the best round.

    ``fit_batch``: factors of the batch size (``fit_sizes``: batch sizes) at which loop (a) is also
    measured (alone, in up to three rounds, the best kept), for the cost model's step time over batch
    sizes. ``batch_size`` and ``overrides`` (a study's problem settings) replace the registry's.
    """
    import statistics

    from optbench import estimate, problems

    if steps is None:
        step_s = probe_step_seconds(problem, data_dir, device, batch_size, overrides)
        steps = int(min(1000, max(3, round(seconds / max(step_s, 1e-6)))))
    setup = make_setup(problem, steps, data_dir, device, batch_size, overrides)
    task = problems.build(problem, setup.args, seed=0, device=device)
    n_params = sum(p.numel() for p in task.model.parameters())
    n_eval = n_eval_examples(task)
    del task
    spe = setup.steps_per_epoch
    speed: dict[str, list[float]] = {k: [] for k in LOOPS}  # per round
    evals: dict[str, list[float]] = {k: [] for k in LOOPS}
    round_eval: dict[str, list[float]] = {"optbench": [], "naive": []}  # per round: its median evaluation
    setups: list[float] = []
    max_rounds = max(repeats, max_rounds if max_rounds is not None else 10 * repeats)
    t_start, r = time.monotonic(), 0
    while r < repeats or (r < max_rounds and time.monotonic() - t_start < min_seconds):
        order = list(LOOPS[r % len(LOOPS):]) + list(LOOPS[:r % len(LOOPS)])  # rotate: no loop always first
        for loop in order:
            m = MEASURE[loop](setup, device)
            speed[loop].append(spe / statistics.median(m["chunks"]))
            evals[loop] += m.get("eval", [])
            setups += m.get("setup", [])
            if loop in round_eval:
                round_eval[loop].append(statistics.median(m["eval"]))
        r += 1
        progress(f"  {problem}: round {r}/{repeats if r <= repeats else '+'}: " +
                 ", ".join(f"{k} {v[-1]:.4g}" for k, v in speed.items()) + " steps/s")
    ratios = {}
    for name, other in (("a/b", "bare"), ("a/b'", "bare+eval"), ("a/c", "naive")):
        per_round = sorted(a / x for a, x in zip(speed["optbench"], speed[other]))
        ratios[name] = statistics.median(per_round)
        ratios[name + " q1"], ratios[name + " q3"] = _quartiles(per_round)
    # a/c per protocol run: an epoch of the real sizes — the bench's own where it trained on the problem's
    # real data (its arguments untouched: P1, the digits, MNIST-1D) or where there is no size model
    as_is = setup.args == {**problems.get(problem).args, **dict(overrides or {})}
    real = (spe, n_eval) if as_is else real_sizes(problem, setup.batch_size, overrides)
    spe_run, eval_scale = (real[0], real[1] / n_eval) if real else (spe, 1.0)
    epoch_s = {loop: [protocol_epoch_s(spe_run, v, e, eval_scale) for v, e in zip(speed[loop], round_eval[loop])]
               for loop in round_eval}
    per_round = sorted(c / a for a, c in zip(epoch_s["optbench"], epoch_s["naive"]))
    ratios["a/c run"] = statistics.median(per_round)
    ratios["a/c run q1"], ratios["a/c run q3"] = _quartiles(per_round)
    fit = None
    if fit_batch or fit_sizes:
        sizes, times = [setup.batch_size], [1 / max(speed["optbench"])]
        for bs in [max(1, round(setup.batch_size * f)) for f in fit_batch] + list(fit_sizes):
            if bs in sizes:
                continue
            sub = data_dir / f"bs{bs}"
            sub.mkdir(exist_ok=True)
            try:
                other = make_setup(problem, min(1000, max(3, round(steps * setup.batch_size / bs))), sub, device, bs,
                                   overrides)
            except ValueError as e:  # a batch larger than the problem's fixed data set
                progress(f"  {problem}: batch size {bs} skipped: {e}")
                continue
            best = max(other.steps_per_epoch / statistics.median(measure_optbench(other, device)["chunks"])
                       for _ in range(min(repeats, 3)))
            sizes.append(bs)
            times.append(1 / best)
            progress(f"  {problem}: batch size {bs}: optbench {best:.4g} steps/s")
        fit = fit_step_time(sizes, times) if len(sizes) > 1 else None
    return Result(problem, setup.batch_size, n_params, spe, setup.timed_steps, n_eval,
                  {k: max(v) for k, v in speed.items()}, {k: min(v) for k, v in evals.items() if v}, ratios, r,
                  min(setups), fit, estimate.speed_key(problem, overrides), dict(overrides or {}), real)


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    import statistics

    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def run(problem_names: Iterable[str], *, steps: int | None = None, seconds: float = 0.5, repeats: int = 7,
        device: str = "cpu", threads: int | None = None, clock: str | None = None,
        progress: Callable[[str], None] = print, fit_batch: Sequence[float] = (),
        study: Any = None, precision: str = "fp32", cudnn_benchmark: bool = False,
        min_seconds: float = 0.0) -> list[Result]:
    """Bench each problem; with ``study`` (a loaded study file), each of its problems as the study sets
    it up — its argument overrides, its largest batch size for the three loops and its smallest for the
    step-time fit — under the profile key the estimate of that study looks up."""
    global _clock
    import torch

    from optbench import numerics

    if threads:
        torch.set_num_threads(threads)
    numerics.configure(precision, cudnn_benchmark)  # as the worker sets them (profile keys of the same names)
    _clock = CLOCKS[clock or "wall"]
    results = []
    with tempfile.TemporaryDirectory(prefix="optbench-bench-") as tmp:
        for name in problem_names:
            progress(f"{name} …")
            data_dir = Path(tmp) / name
            data_dir.mkdir()
            kw: dict[str, Any] = {}
            if study is not None:
                setting = study.settings[name]
                sizes = sorted(set(setting.batch_sizes))
                kw = {"batch_size": sizes[-1], "fit_sizes": sizes[:1], "overrides": dict(setting.args)}
            results.append(bench_problem(name, steps=steps, seconds=seconds, repeats=repeats, device=device,
                                         data_dir=data_dir, progress=progress, fit_batch=fit_batch,
                                         min_seconds=min_seconds, **kw))
    return results


AB_EVAL = "a/b'"


def format_table(results: Sequence[Result]) -> str:
    w = max([22, *(len(r.problem) for r in results)])  # the longest name (tokens_tf_… has 30 characters)
    head = (f"{'problem':<{w}} {'params':>10} {'bs':>4} {'spe':>9} {'steps':>5} {'rnd':>3}  {'(a) optbench':>12} "
            f"{'(b) bare':>9} {'(c) naive':>9}  {'a/b [q1-q3]':>16} {AB_EVAL:>5} {'a/c':>5} {'a/c run [q1-q3]':>16}  "
            f"{'eval a':>7} {'eval c':>7} {'c/a':>5}")
    lines = [head, "-" * len(head)]
    for r in results:
        s, e, q = r.steps_per_s, r.eval_s, r.ratios
        spe = f"{r.steps_per_epoch}/{r.real[0] if r.real is not None else '?'}"
        lines.append(f"{r.problem:<{w}} {r.n_params:>10,} {r.batch_size:>4} {spe:>9} {r.timed_steps:>5} "
                     f"{r.rounds:>3}  {s['optbench']:>12.4g} {s['bare']:>9.4g} {s['naive']:>9.4g}  "
                     f"{r.a_over_b:>5.2f} [{q['a/b q1']:.2f}-{q['a/b q3']:.2f}] "
                     f"{r.a_over_b_eval:>5.2f} {r.a_over_c:>5.2f} {r.a_over_c_run:>5.2f} "
                     f"[{q.get('a/c run q1', math.nan):.2f}-{q.get('a/c run q3', math.nan):.2f}]  "
                     f"{e['optbench']:>6.3f}s {e['naive']:>6.3f}s {e['naive'] / e['optbench']:>5.1f}")
    lines.append("rnd: rounds; steps/s: training steps per second in each loop's best round; a/b, a/c: median over the "
                 "rounds of the ratio within a round [quartiles]; a/b': against the bare loop evaluated (untimed) "
                 "after every epoch as the protocol is: what is left of a/b once what evaluating costs the steps after "
                 "it is taken out; a/c run: an epoch of a real run (spe's second number of steps) plus one evaluation "
                 "of the real splits, (c)'s time over (a)'s, from each round's step speeds and median evaluations; "
                 "eval: fastest evaluation of the bench's train_eval+valid+test splits, (a) vs (c); spe: steps per "
                 "epoch in the bench / in a real run (where the bench's epochs are shorter, (a) pays its per-epoch "
                 "work - permutation, checkpoint snapshot, caches refilled after each evaluation - more often than a "
                 "real run does)")
    return "\n".join(lines)


#: issue 8's goals: optbench's training steps at least this fraction of the bare loop's speed on
#: every problem, and a run at least this many times as fast as the naive loop's on the small problems
AB_GOAL = 0.95
AC_RUN_GOAL = 1.5
#: "small" for the a/c goal: a bare step under this on the device measured. There the per-step cost of
#: a loop's bookkeeping (a DataLoader, a read of the loss) is a visible part of a step; a convnet's
#: 30 ms-5 s step on a CPU hides it (a/c ≈ 1 there), while on a GPU the same convnet may be small.
SMALL_STEP_S = 0.002


def _goal_misses(results: Sequence[Result], name: str, goal: float) -> list[tuple[str, bool, bool]]:
    """The problems whose median ``name`` is below ``goal``, each as (its value and quartiles, whether
    the goal lies inside the quartiles: then the miss is within the run-to-run noise of this machine,
    whether it is an a/b miss of short bench epochs: see :func:`_short_epoch_miss`)."""
    misses = []
    for r in results:
        value = r.ratios.get(name, math.nan)
        q1, q3 = r.ratios.get(f"{name} q1", math.nan), r.ratios.get(f"{name} q3", math.nan)
        if not value >= goal:
            noise = q3 >= goal
            where = "goal inside the quartiles" if noise else "below the goal in most rounds"
            short = name == "a/b" and _short_epoch_miss(r, goal)
            if short:
                where += f"; a/b' {r.a_over_b_eval:.2f} in epochs of {r.steps_per_epoch} steps, a run's {r.real[0]}"
            misses.append((f"{r.problem} {value:.3f} [{q1:.3f}-{q3:.3f}: {where}]", noise, short))
    return misses


def _short_epoch_miss(r: Result, goal: float) -> bool:
    """An a/b miss that the bench's epochs being shorter than a real run's can explain: against the
    bare loop that also evaluates (a/b', untimed) the goal is met. The steps right after an evaluation
    run slower in every loop that evaluates (caches refilled) — optbench's does, the bare loop (b) does
    not; in the bench's epochs of a few steps they are a large share of the timed steps, in a real
    run's epoch of hundreds a negligible one. (fmnist_2c2d, 10th
    session: a/b 0.92-0.93 in epochs of 2 steps, 1.04 in epochs of 30.)"""
    return r.real is not None and r.steps_per_epoch < r.real[0] and r.a_over_b_eval >= goal


def format_goals(results: Sequence[Result]) -> str:
    """The throughput goals (issue 8 in the project's tracker) checked against this run. A median
    below a goal whose upper quartile reaches it is reported as such: on a shared machine a few
    disturbed rounds move a median by a few hundredths, and more rounds (``--min-seconds``) settle it.
    An a/b miss that only the bench's short epochs make is reported as such too (``--steps``)."""
    small = [r for r in results if r.steps_per_s["bare"] > 1 / SMALL_STEP_S]
    lines, within_noise, short_epochs = [], False, False
    for label, name, goal, checked in ((f"a/b >= {AB_GOAL} on every problem", "a/b", AB_GOAL, results),
                                       (f"a/c run >= {AC_RUN_GOAL} on the small problems (a bare step under "
                                        f"{SMALL_STEP_S * 1e3:g} ms here)", "a/c run", AC_RUN_GOAL, small)):
        if not checked:
            lines.append(f"  {label}: no such problem in this run")
            continue
        misses = _goal_misses(checked, name, goal)
        within_noise = within_noise or any(noise for _, noise, _ in misses)
        short_epochs = short_epochs or any(short for _, _, short in misses)
        line = f"  {label}: met by {len(checked) - len(misses)} of {len(checked)}"
        if misses:
            line += "; below: " + ", ".join(text for text, _, _ in misses)
        lines.append(line)
    if within_noise:
        lines.append("  (a median below a goal that its quartiles reach can be noise: rerun those problems with more "
                     "rounds, e.g. --min-seconds 60)")
    if short_epochs:
        lines.append("  (an a/b miss where a/b' meets the goal, in epochs shorter than a real run's: the steps after each "
                     "evaluation are slower in every loop that evaluates (the bare loop (b) does not) and weigh more in "
                     "the bench's short epochs than in a run; rerun those problems with longer epochs, e.g. --steps 60 "
                     "for epochs of 30 steps: minutes a round for a convnet on a CPU)")
    return "throughput goals:\n" + "\n".join(lines)


def format_fits(results: Sequence[Result]) -> str:
    """Per-run set-up and, where measured, the step time over batch sizes (what the cost model uses)."""
    lines = ["per run: set-up (task + optimizer + first checkpoint); step time = fixed + per example x B (loop (a), fitted)"]
    w = max([22, *(len(r.problem) for r in results)])
    for r in results:
        line = f"  {r.problem:<{w}} set-up {r.setup_s * 1e3:8.1f} ms"
        if r.fit is not None:
            pts = ", ".join(f"B={b}: {t * 1e3:.3g} ms" for b, t in zip(r.fit.batch_sizes, r.fit.step_s))
            line += f"   step {r.fit.fixed * 1e3:.3g} ms + {r.fit.per_example * 1e6:.3g} us x B   ({pts})"
        lines.append(line)
    return "\n".join(lines)


def measure_task_start(repeats: int = 3) -> float:
    """Seconds a fresh array task spends before its first run: a new interpreter importing what the
    worker imports (torch, h5py, submitit, optbench's worker and trainer) and making its first
    optimizer (``zero_grad`` is one of the torch functions that import ``torch._dynamo`` on their first
    call: 0.9–1.4 s on this CPU, once per process), with the collector paused as a task does it
    (:mod:`optbench.startup`); the fastest of ``repeats``."""
    import subprocess
    import sys

    code = ("from optbench import startup; startup.pause_collector(); import submitit, optbench.worker; "
            "startup.import_training_stack()")  # as optbench.launch and ChunkRunner do
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - t)
    return best


def environment(device: str) -> dict[str, Any]:
    import platform

    import torch

    from optbench import numerics

    env = {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        now = numerics.current()
        env["precision"] = "fp32" if now["matmul"] == "ieee" else "tf32"
        env["cudnn_benchmark"] = now["cudnn_benchmark"]
    return env


def write_device_profile(path: str | Path, results: Sequence[Result], device: str, command: str,
                         name: str | None = None, task_start_s: float | None = None) -> Path:
    """Write the speeds of loop (a) as a device profile for the cost model (:mod:`optbench.estimate`)."""
    from optbench import estimate

    env = environment(device)
    p = Path(path)
    old: dict[str, Any] = {}
    if p.exists():  # keep what other commands measured (runs_in_parallel, parallel_speedup, other problems)
        import tomllib

        old = tomllib.loads(p.read_text())
    speeds = dict(old.get("problems", {}))
    for r in results:
        entry: dict[str, Any] = {"batch_size": r.batch_size, "steps_per_s": r.steps_per_s["optbench"],
                                 "eval_examples_per_s": r.eval_examples_per_s, "a_over_b": r.a_over_b,
                                 "a_over_b_eval": r.a_over_b_eval}
        if r.overrides:  # measured as a study sets the problem up (optbench bench --study)
            entry["args"] = r.overrides
        if math.isfinite(r.setup_s):
            entry["setup_s"] = r.setup_s
        if r.fit is not None:
            entry.update(step_s_fixed=r.fit.fixed, step_s_per_example=r.fit.per_example,
                         fit_batch_sizes=r.fit.batch_sizes, fit_step_s=r.fit.step_s)
        entry["measured"] = time.strftime("%Y-%m-%d")
        entry["command"] = command  # per entry: a profile is filled by several commands
        speeds[r.key or r.problem] = entry
    top = {"name": name or old.get("name", p.stem),
           "description": old.get("description", f"{env['cpu']} ({env['cpus']} CPUs), {device}, torch {env['torch']}"),
           "measured": True, "device": device, "threads_per_run": env["threads"],
           "runs_in_parallel": old.get("runs_in_parallel", 1), "parallel_speedup": old.get("parallel_speedup", 1.0),
           "command": command}
    if "precision" in env:  # GPU speeds depend on it: the profile says which arithmetic they are for
        top["precision"], top["cudnn_benchmark"] = env["precision"], env["cudnn_benchmark"]
    if task_start_s is not None:
        top["task_start_s"] = task_start_s
    elif "task_start_s" in old:
        top["task_start_s"] = old["task_start_s"]
    for k in ("parallel_command",):
        if k in old:
            top[k] = old[k]
    header = f"""Device profile for the cost model: optbench plan STUDY --estimate --device {p}
Written by `optbench bench --write-device` (speeds of optbench's own loop, one run alone, training steps
per second and evaluated examples per second); runs_in_parallel / parallel_speedup by
benchmarks/bench_parallel.py --update-device. Re-measure rather than edit."""
    return estimate.write_device(p, top, speeds, header)
