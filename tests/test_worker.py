"""The training loop and the worker: evaluation rows, resume equality, skip-finished, failures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench import planner
from optbench.checkpoint import CheckpointStore
from optbench.record import RunRecord
from optbench.storage import EVAL_FIELDS, TaskFile, scan_results
from optbench.study import load_study
from optbench.testing import MemorySink, Stop, StopAtStep
from optbench.trainer import train_run
from optbench.worker import ChunkRunner

METRICS = [f for f in EVAL_FIELDS if f != "wall_time"]


def record(problem="digits_mlp", epochs=3, **kw):
    hp = kw.pop("hparams", (("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8), ("lr", 1e-3)))
    return RunRecord(study="t", problem=problem, optimizer=kw.pop("optimizer", "adam"), schedule="cosine",
                     budget="oneshot", kind="oneshot", trial=-1, seed=kw.pop("seed", 42),
                     batch_size=kw.pop("batch_size", 64), num_epochs=epochs, hparams=hp, **kw)


def memory_checkpoint(saved: dict, stop_at_epoch: int | None = None):
    """A checkpoint store in ``saved["s"]``; raises Stop right after saving the end of ``stop_at_epoch``."""
    def checkpoint(state):
        if state is None:
            return saved.get("s")
        saved["s"] = state
        if state["epoch"] == stop_at_epoch and state["pos"] == 0:
            raise Stop
        return None
    return checkpoint


def run_uninterrupted(rec):
    sink = MemorySink()
    assert train_run(rec, sink=sink, checkpoint=lambda s: None) == "finished"
    return sink.array()


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_rows_before_training_and_every_epoch():
    rows = run_uninterrupted(record(epochs=3))
    assert list(rows["epoch"]) == [0, 1, 2, 3]
    assert np.isnan(rows["minibatch_loss"][0]) and np.all(np.isfinite(rows["minibatch_loss"][1:]))
    assert rows["train_loss"][-1] < rows["train_loss"][0]
    # cosine: lr of the epoch-e evaluation is lr0 * f(e)
    np.testing.assert_allclose(rows["lr"], 1e-3 * 0.5 * (1 + np.cos(np.pi * np.arange(4) / 3)))


@pytest.mark.parametrize("stop_at", [("epoch", 2), ("step", 5)])
def test_resume_from_checkpoint_equals_uninterrupted(stop_at):
    """Interrupt at an epoch boundary or mid-epoch; the resumed curve is bitwise the same."""
    rec = record(problem="shakespeare_char_rnn", epochs=3, batch_size=32, optimizer="rmsprop",
                 hparams=(("eps", 1e-10), ("lr", 1e-3), ("momentum", 0.0), ("rho", 0.9)),
                 problem_args=(("dropout", 0.2), ("hidden", 32), ("layers", 1), ("num_chars", 20000)))
    reference = run_uninterrupted(rec)
    saved = {}
    kind, at = stop_at

    checkpoint = memory_checkpoint(saved, at if kind == "epoch" else None)

    sink = MemorySink()
    with pytest.raises(Stop):  # checkpoint_overhead=1: a checkpoint at every epoch end, however short
        train_run(rec, sink=sink, checkpoint=checkpoint, interrupt=StopAtStep(at if kind == "step" else -1),
                  checkpoint_overhead=1.0)
    sink.rows.append(sink.rows[-1])  # a row written after the checkpoint must be dropped on resume
    state = saved["s"]
    assert (state["epoch"], state["pos"]) == ((at, 0) if kind == "epoch" else (0, at))
    assert train_run(rec, sink=sink, checkpoint=checkpoint) == "finished"
    resumed = sink.array()
    assert len(resumed) == rec.num_epochs + 1
    for f in METRICS:
        np.testing.assert_array_equal(resumed[f], reference[f], err_msg=f)


def test_divergence_is_a_result():
    rec = record(problem="quadratic_deep", optimizer="sgd", hparams=(("lr", 10.0),), epochs=5, batch_size=128)
    sink = MemorySink()
    assert train_run(rec, sink=sink, checkpoint=lambda s: None) == "diverged"
    rows = sink.array()
    assert 1 <= len(rows) - 1 <= 5 and not np.isfinite(rows["train_loss"][-1])


def test_worker_trains_chunk_and_skips_finished(tiny_study, tmp_path):
    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    ids = list(df[df.kind != "rerun"].run_id)
    out = ChunkRunner()(str(study_dir), "task-a", ids + [df[df.kind == "rerun"].run_id.iloc[0]])
    assert sorted(out["trained"]) == sorted(ids) and len(out["skipped"]) == 1  # the unresolved re-run
    states, bad = scan_results(study_dir)
    assert not bad and all(states[r]["status"] in ("finished", "diverged") for r in ids)
    assert all(states[r]["n_evals"] == 3 for r in ids if states[r]["status"] == "finished")
    # a second task given the same runs trains nothing (the leases say finished)
    out2 = ChunkRunner()(str(study_dir), "task-b", ids)
    assert out2["trained"] == [] and sorted(out2["skipped"]) == sorted(ids)
    assert TaskFile(study_dir / "results" / "task-b.h5").run_ids() == []
    assert not list(CheckpointStore(study_dir).dir.glob("*.pt"))  # removed once finished


def test_run_attributes_hold_record_and_provenance(tiny_study, tmp_path):
    import json

    import h5py

    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    rid = df.run_id.iloc[0]
    ChunkRunner()(str(study_dir), "task-a", [rid])
    with h5py.File(study_dir / "results" / "task-a.h5") as f:
        a = f["runs"][rid].attrs
        assert json.loads(a["record"])["seed"] == int(df.seed.iloc[0])
        assert RunRecord.from_json(a["record"]).run_id == rid
        assert a["status"] == "finished" and a["host"] and "torch" in json.loads(a["versions"])
        assert a["wall_time"] > 0 and a["finished"] >= a["started"]


@pytest.mark.parametrize("flush", [0, 1, 4])  # the CPU's one-by-one sum, the GPU's grouped one
def test_minibatch_loss_is_the_mean_of_the_epochs_step_losses(monkeypatch, flush):
    """On a GPU the step losses are folded into the sum in groups; the recorded value must still be
    the plain mean of that epoch's step losses, read here one by one from the loss function."""
    from optbench import problems, trainer

    monkeypatch.setattr(trainer, "MB_FLUSH_STEPS_CPU", flush)  # 19 steps an epoch: 4 folds mid-epoch
    seen: list[tuple[bool, float]] = []
    real_build = problems.build

    def build(*a, **k):
        task = real_build(*a, **k)
        real_loss = task.loss

        def loss(model, batch):
            out = real_loss(model, batch)
            seen.append((torch.is_grad_enabled() and not torch.is_inference_mode_enabled(), float(out[0].detach())))
            return out
        task.loss = loss
        return task

    monkeypatch.setattr(problems, "build", build)
    rows = run_uninterrupted(record(epochs=2))
    train_losses = [v for training, v in seen if training]
    per_epoch = len(train_losses) // 2
    assert per_epoch == 19 and len(train_losses) == 38
    for e in (1, 2):
        expected = sum(train_losses[(e - 1) * per_epoch:e * per_epoch]) / per_epoch
        assert rows["minibatch_loss"][e] == pytest.approx(expected, rel=1e-6)


def test_resume_with_losses_pending_is_bit_identical(monkeypatch):
    """A checkpoint taken between two folds of the step losses carries the pending ones: the resumed
    run folds them in the same groups, so even minibatch_loss matches bit for bit."""
    from optbench import trainer

    monkeypatch.setattr(trainer, "MB_FLUSH_STEPS_CPU", 3)  # the GPU's grouped sums, on the CPU
    rec = record(epochs=2)
    reference = run_uninterrupted(rec)
    saved = {}

    checkpoint = memory_checkpoint(saved)

    sink = MemorySink()
    with pytest.raises(Stop):
        train_run(rec, sink=sink, checkpoint=checkpoint, interrupt=StopAtStep(5))  # 5 = one fold of 3 + 2 pending
    assert len(saved["s"]["mb_pending"]) == 2 and saved["s"]["mb_count"] == 5
    assert train_run(rec, sink=sink, checkpoint=checkpoint) == "finished"
    np.testing.assert_array_equal(sink.array()["minibatch_loss"], reference["minibatch_loss"])
    for f in METRICS:
        np.testing.assert_array_equal(sink.array()[f], reference[f], err_msg=f)


class FakeClock:
    """trainer.time stand-in: time passes only where the test says (a step, a checkpoint write)."""

    def __init__(self):
        self.now = 1000.0

    def time(self) -> float:
        return self.now


@pytest.mark.parametrize("cost_steps", [0, 2, 5, 10**9])
def test_epoch_end_checkpoints_are_grouped_to_bound_their_cost(monkeypatch, cost_steps):
    """checkpoint_overhead: epoch-end checkpoints take at most that fraction of the time since the
    previous one — all of them when they are free, only the first when they are dear."""
    from optbench import problems, trainer

    clock, step_s = FakeClock(), 1e-3
    monkeypatch.setattr(trainer, "time", clock)
    real_build = problems.build

    def build(*a, **k):  # every training step takes step_s
        task = real_build(*a, **k)
        real_loss = task.loss

        def loss(model, batch):
            if torch.is_grad_enabled():
                clock.now += step_s
            return real_loss(model, batch)
        task.loss = loss
        return task

    monkeypatch.setattr(problems, "build", build)
    cost = cost_steps * step_s
    saves: list[tuple[int, float, float]] = []  # (epoch, clock before, clock after)

    def checkpoint(state):
        if state is None:
            return None
        before = clock.now
        clock.now += cost
        saves.append((state["epoch"], before, clock.now))
        return None

    epochs, overhead = 30, 0.02
    assert train_run(record(epochs=epochs), sink=MemorySink(), checkpoint=checkpoint, checkpoint_every_s=1e12,
                     checkpoint_overhead=overhead) == "finished"
    saved_epochs = [e for e, _, _ in saves]
    assert saved_epochs[0] == 1 and saved_epochs == sorted(set(saved_epochs))
    if cost_steps == 0:
        assert saved_epochs == list(range(1, epochs))
    elif cost_steps == 10**9:
        assert saved_epochs == [1]
    else:
        assert 1 < len(saves) < epochs - 1, saved_epochs  # grouped, not switched off
        for (_, _, end_prev), (_, start, _) in zip(saves, saves[1:]):
            assert cost <= overhead * (start - end_prev) + 1e-9  # each write paid for by the time before it
    # checkpoint_overhead = 1 (or more): every epoch, whatever it costs
    saves.clear()
    train_run(record(epochs=5), sink=MemorySink(), checkpoint=checkpoint, checkpoint_every_s=1e12,
              checkpoint_overhead=1.0)
    assert [e for e, _, _ in saves] == [1, 2, 3, 4]


def test_checkpoint_rows_are_packed_and_old_row_lists_still_resume():
    """Checkpoints hold the evaluation rows as one byte tensor (pickling a list of rows was most of a
    small run's checkpoint time); a checkpoint from before, with a list of rows, still resumes."""
    rec = record(epochs=3)
    reference = run_uninterrupted(rec)
    saved = {}

    checkpoint = memory_checkpoint(saved, 2)

    with pytest.raises(Stop):
        train_run(rec, sink=MemorySink(), checkpoint=checkpoint, checkpoint_overhead=1.0)
    packed = saved["s"]["rows"]
    assert isinstance(packed, torch.Tensor) and packed.dtype == torch.uint8
    table = packed.numpy().view(reference.dtype)
    np.testing.assert_array_equal(table["epoch"], [0, 1, 2])
    np.testing.assert_array_equal(table["valid_loss"], reference["valid_loss"][:3])
    saved["s"]["rows"] = [table[i:i + 1].copy() for i in range(3)]  # the old format
    sink = MemorySink()
    assert train_run(rec, sink=sink, checkpoint=checkpoint) == "finished"
    for f in METRICS:
        np.testing.assert_array_equal(sink.array()[f], reference[f], err_msg=f)


def test_evaluation_does_not_depend_on_the_evaluation_batch_size():
    """The sequence problems evaluate in smaller batches on a CPU (large ones were slower): the
    split's mean loss and accuracy must not change with it (checked against one whole-split batch)."""
    from optbench import problems
    from optbench.problems.base import sequence_eval_batch
    from optbench.trainer import evaluate

    args = {**problems.get("uniform_tokens_lm").args, "n_train_tokens": 20_000, "n_eval_tokens": 9_000}
    task = problems.build("uniform_tokens_lm", args, seed=0)
    assert task.eval_batch_size == sequence_eval_batch("cpu", cpu=128) == 128 < task.splits["valid"][0].shape[0]
    assert sequence_eval_batch("cuda", cpu=128) == 1024
    x, y = task.splits["valid"]
    with torch.no_grad():
        logits = task.model(x)
        whole = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).item()
    loss, _ = evaluate(task, task.splits["valid"])
    assert loss == pytest.approx(whole, rel=1e-5)


def test_problems_without_an_evaluation_batch_get_the_devices_default():
    """MNIST-1D sets none: on a CPU it evaluates 1024 examples at a time (4096 was slower, and slowed
    the training steps after it), a GPU gets 4096; the mean over the split is the same either way."""
    from optbench import problems
    from optbench.problems.base import default_eval_batch
    from optbench.trainer import evaluate

    task = problems.build("mnist1d_mlp", {}, seed=0)
    assert task.eval_batch_size == default_eval_batch("cpu") == 1024 and default_eval_batch("cuda") == 4096
    n = task.splits["train_eval"][0].shape[0]
    assert n > 1024  # several batches, the last one partial
    batched = evaluate(task, task.splits["train_eval"])
    task.eval_batch_size = n
    whole = evaluate(task, task.splits["train_eval"])
    assert batched == pytest.approx(whole, rel=1e-6)


def test_row_writer_groups_rows_and_loses_none(tmp_path):
    """Rows wait in memory while a write would cost more than `overhead` of the time since the last
    one; flush writes them; the file holds every row, in order; a resume replaces pending rows."""
    from optbench.storage import RowWriter, eval_row

    now = [0.0]

    class SlowFile(TaskFile):  # every write session takes 1 s of the fake clock
        def append(self, run_id, rows):
            now[0] += 1.0
            return super().append(run_id, rows)

    tf = SlowFile(tmp_path / "t.h5")
    tf.begin_run("r", "{}", {})
    w = RowWriter(tf, "r", overhead=0.1, clock=lambda: now[0])
    rows = [eval_row({"epoch": e, "step": 10 * e, "train_loss": 1.0 / (e + 1)}) for e in range(25)]
    written = []
    for row in rows:
        w.append(row)
        written.append(len(tf.rows("r")))
        now[0] += 2.0  # an epoch: 2 s
    # the first row at once (written at t = 0, done at 1: it cost 1 s); the next write once 1 s / 0.1 =
    # 10 s have passed since then: with row 5 (t = 11, rows 1-5), then with row 10 (t = 22, rows 6-10)
    assert written[:11] == [1, 1, 1, 1, 1, 6, 6, 6, 6, 6, 11]
    assert len(tf.rows("r")) < len(rows) and w.pending
    w.flush()
    assert np.array_equal(tf.rows("r")["epoch"], np.arange(25)) and not w.pending
    w.flush()  # nothing waits: no write
    assert len(tf.rows("r")) == 25
    w.append(rows[0])
    w.rows_restored(np.concatenate(rows[:3]))  # a resume: the checkpoint's rows, nothing pending
    w.flush()
    assert np.array_equal(tf.rows("r")["epoch"], np.arange(3))
    every = RowWriter(tf, "r", overhead=1.0, clock=lambda: now[0])
    every.append(rows[3])
    assert len(tf.rows("r")) == 4 and not every.pending  # overhead 1: each row at once


def test_worker_writes_all_rows_before_each_checkpoint(tiny_study, tmp_path, monkeypatch):
    """The result file holds every row the checkpoint holds when the checkpoint is saved (a kill
    right after it loses nothing the resume does not restore), and all rows at the run's end."""
    from optbench import checkpoint
    from optbench.worker import ChunkRunner

    study_dir = tmp_path / "s"
    df = planner.write_plan(load_study(tiny_study), study_dir, progress=lambda m: None)
    rid = list(df[df.kind != "rerun"].run_id)[0]
    seen = []
    real_save = checkpoint.CheckpointStore.save

    def save(self, run_id, state):
        from optbench.trainer import _rows_from_checkpoint

        seen.append((len(_rows_from_checkpoint(state["rows"])), len(TaskFile(study_dir / "results" / "task-c.h5").rows(run_id))))
        return real_save(self, run_id, state)

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", save)
    # a budget no write fits in: rows wait until a flush, and only the first epoch end is checkpointed
    ChunkRunner()(str(study_dir), "task-c", [rid], {"threads": 1, "device": "cpu", "checkpoint_overhead": 1e-9})
    epochs = int(df.set_index("run_id").loc[rid, "num_epochs"])
    assert epochs >= 2 and seen == [(2, 2)]  # rows 0 and 1: row 1 was waiting and is written first
    assert len(TaskFile(study_dir / "results" / "task-c.h5").rows(rid)) == epochs + 1


def test_quadratic_rows_hold_the_exact_mean_losses(monkeypatch):
    """A P1 run's rows hold the closed-form (float64) mean losses at θ of that evaluation: equal to
    the per-example mean to 1e-12, which the batched float32 evaluation is not (~1e-7)."""
    from optbench import problems, trainer
    from tests.conftest import direct_quadratic_mean

    built, thetas = [], []
    real_build = problems.build

    def build(*a, **k):
        built.append(real_build(*a, **k))
        return built[-1]

    class Sink(MemorySink):
        def append(self, row):
            thetas.append(built[0].model.theta.detach().clone())
            super().append(row)

    monkeypatch.setattr(trainer.problems, "build", build)
    rec = record(problem="quadratic_deep", epochs=3, batch_size=128, problem_args=(("train_size", 512),))
    sink = Sink()
    assert train_run(rec, sink=sink, checkpoint=lambda s: None) == "finished"
    rows, task = sink.array(), built[0]
    assert len(rows) == len(thetas) == 4
    for row, theta in zip(rows, thetas):
        for name, split in (("train", "train_eval"), ("valid", "valid"), ("test", "test")):
            direct = direct_quadratic_mean(theta, task.model.hessian, task.splits[split][0])
            assert row[f"{name}_loss"] == pytest.approx(direct, rel=1e-12)


def test_quadratic_run_that_blows_up_is_diverged():
    """SGD at lr 0.05 with a cosine schedule blows P1 up (its largest curvature is up to 60): the run
    must end "diverged" once the loss leaves float32's range, before θ itself overflows (the closed
    form in float64 alone kept such runs "finished" with a test loss of 1e56)."""
    rec = record(problem="quadratic_deep", epochs=60, batch_size=128, optimizer="sgd", hparams=(("lr", 0.05),))
    sink = MemorySink()
    assert train_run(rec, sink=sink, checkpoint=lambda s: None) == "diverged"
    rows = sink.array()
    assert len(rows) < 61 and not np.isfinite(rows["test_loss"][-1]) and np.isfinite(rows["test_loss"][:-1]).all()


def test_eval_rows_built_and_stacked_as_numpy_would():
    """eval_row and stack_rows (the fast paths used every epoch and at each checkpoint and write) give
    byte for byte what field-by-field assignment and np.concatenate give, missing fields NaN."""
    from optbench.storage import EVAL_DTYPE, EVAL_FIELDS, eval_row, stack_rows

    rng = np.random.default_rng(3)
    rows = []
    for e in range(30):
        values = {f: float(rng.normal()) * 10.0 ** int(rng.integers(-20, 20)) for f in EVAL_FIELDS
                  if rng.random() < 0.7}
        values.update(epoch=e, step=int(rng.integers(0, 10**12)), valid_loss=math.inf if e % 7 == 0 else 1.0)
        expected = np.zeros(1, dtype=EVAL_DTYPE)
        for f in EVAL_FIELDS:
            expected[f] = values.get(f, np.nan)
        row = eval_row(values)
        assert row.dtype == EVAL_DTYPE and row.tobytes() == expected.tobytes()
        rows.append(row)
    rows.append(np.concatenate(rows[:3]))  # a table of several rows among single ones
    table = stack_rows(rows)
    assert table.dtype == EVAL_DTYPE and table.tobytes() == np.concatenate(rows).tobytes()
    assert list(table["epoch"]) == [*range(30), 0, 1, 2]
    table["lr"][0] = 5.0  # writable (a resumed run's rows are set from it)
    assert rows[0]["lr"][0] != 5.0  # and a copy
    other = np.zeros(2, dtype=[(f, "<i8" if f == "epoch" else "<f8") for f in EVAL_FIELDS])  # the same fields,
    other["epoch"] = [4, 5]  # other types (as an older checkpoint might hold them): cast
    assert list(stack_rows([rows[0], other])["epoch"]) == [0, 4, 5]
    swapped = np.zeros(1, dtype=[(f, "<f8") for f in reversed(EVAL_FIELDS)])  # same names, other order
    swapped["epoch"] = 7
    assert stack_rows([swapped])["epoch"][0] == 7
    with pytest.raises(ValueError, match="fields"):  # another set of fields: refused, not cast by position
        stack_rows([np.zeros(1, dtype=[("epoch", "<i4"), ("loss", "<f8")])])
    with pytest.raises(ValueError, match="no evaluation rows"):  # as np.concatenate([]) did
        stack_rows([])
