"""The training loop and the worker: evaluation rows, resume equality, skip-finished, failures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench import planner
from optbench.checkpoint import CheckpointStore
from optbench.record import RunRecord
from optbench.storage import EVAL_FIELDS, TaskFile, scan_results
from optbench.study import load_study
from optbench.trainer import train_run
from optbench.worker import ChunkRunner

METRICS = [f for f in EVAL_FIELDS if f != "wall_time"]


class MemorySink:
    def __init__(self):
        self.rows = []

    def rows_restored(self, rows):
        self.rows = [rows[i:i + 1] for i in range(len(rows))]

    def append(self, row):
        self.rows.append(row)

    def array(self):
        return np.concatenate(self.rows)


def record(problem="digits_mlp", epochs=3, **kw):
    hp = kw.pop("hparams", (("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8), ("lr", 1e-3)))
    return RunRecord(study="t", problem=problem, optimizer=kw.pop("optimizer", "adam"), schedule="cosine",
                     budget="oneshot", kind="oneshot", trial=-1, seed=kw.pop("seed", 42),
                     batch_size=kw.pop("batch_size", 64), num_epochs=epochs, hparams=hp, **kw)


class Stop(Exception):
    pass


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

    class FakeInterrupt:
        steps = 0

        @property
        def requested(self):
            self.steps += 1
            return kind == "step" and self.steps == at

        def act(self, save):
            save()
            raise Stop

    def checkpoint(state):
        if state is None:
            return saved.get("s")
        saved["s"] = state
        if kind == "epoch" and state["epoch"] == at and state["pos"] == 0:
            raise Stop
        return None

    sink = MemorySink()
    with pytest.raises(Stop):
        train_run(rec, sink=sink, checkpoint=checkpoint, interrupt=FakeInterrupt())
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
