"""Loading results: the long table, its columns and values, bad files, duplicates, no torch."""
from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.synthetic import Run, eval_rows, make_record, simple_run, write_results
from analysis.table import Results, combine

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _study(tmp_path, runs, per_file=3):
    d = tmp_path / "study"
    write_results(d, runs, runs_per_file=per_file)
    return d


def test_synthetic_files_have_optbench_storage_layout(tmp_path):
    """The test writer produces exactly what optbench.storage writes and reads."""
    from optbench import storage

    from analysis.table import EVAL_DTYPE, EVAL_FIELDS

    assert EVAL_DTYPE == storage.EVAL_DTYPE and EVAL_FIELDS == storage.EVAL_FIELDS
    run = simple_run(0.9, optimizer="adam", kind="tuning", trial=3, budget="small", hparams={"lr": 0.01}, num_epochs=4)
    d = _study(tmp_path, [run])
    state, bad = storage.scan_results(d)
    assert not bad and state[run.run_id]["status"] == "finished" and state[run.run_id]["n_evals"] == 5
    (rid, attrs, rows), = list(storage.iter_curves(storage.result_files(d)[0]))
    assert rid == run.run_id and json.loads(attrs["record"])["trial"] == 3
    np.testing.assert_array_equal(rows, run["evals"])
    # and the real writer's files load (TaskFile: one open-write-close per call, as the worker does)
    tf = storage.TaskFile(d / "results" / "task-real.h5")
    rec = make_record(optimizer="sgd", seed=7, hparams={"lr": 0.5})
    tf.begin_run("real0001", json.dumps(rec), {"host": "n1"})
    for e in range(3):
        tf.append("real0001", eval_rows(1, epoch=e, step=10 * e, valid_loss=1.0 / (e + 1), test_loss=2.0 / (e + 1),
                                        train_loss=0.5))
    tf.set_status("real0001", "finished", wall_time=1.5)
    runs = analysis.load_runs(d)
    real = runs.set_index("run_id").loc["real0001"]
    assert real["seed"] == 7 and real["hp_lr"] == 0.5 and real["n_evals"] == 3 and real["final_test_loss"] == pytest.approx(2 / 3)
    assert real["host"] == "n1" and real["wall_time"] == 1.5


def test_long_table_columns_and_values_known(tmp_path):
    acc = simple_run(0.8, 0.75, metric="accuracy", problem="fmnist_2c2d", optimizer="adam", seed=43,
                     kind="rerun", budget="large", batch_size=64, hparams={"lr": 0.001, "beta1": 0.9}, num_epochs=3)
    loss = simple_run(0.2, 0.3, metric="loss", problem="quadratic_deep", optimizer="sgd", trial=1, kind="tuning",
                      budget="small", hparams={"lr": 0.1}, num_epochs=2)
    d = _study(tmp_path, [acc, loss])
    long = analysis.load_results(d)
    for c in ("run_id", "study", "problem", "optimizer", "schedule", "budget", "kind", "trial", "seed", "batch_size",
              "num_epochs", "hparams", "status", "epoch", "step", "split", "metric", "value"):
        assert c in long.columns, c
    for c in ("run_id", "problem", "optimizer", "split", "metric", "hparams"):
        assert isinstance(long[c].dtype, pd.CategoricalDtype), c
    # 4 evaluations × 6 series for the accuracy problem, 3 × 3 (no accuracy rows) for the loss problem
    assert len(long) == 4 * 6 + 3 * 3
    assert set(long.loc[long["problem"] == "quadratic_deep", "metric"]) == {"loss"}
    a = long[(long["run_id"] == acc.run_id) & (long["split"] == "test") & (long["metric"] == "accuracy")]
    np.testing.assert_allclose(a.sort_values("epoch")["value"], acc["evals"]["test_accuracy"])
    assert list(a.sort_values("epoch")["step"]) == [0, 100, 200, 300]
    row = long[long["run_id"] == acc.run_id].iloc[0]
    assert (row["optimizer"], row["seed"], row["batch_size"], row["kind"], row["budget"]) == ("adam", 43, 64, "rerun", "large")
    assert row["hparams"] == "beta1=0.9,lr=0.001"
    runs = analysis.load_runs(d).set_index("run_id")
    assert runs.loc[acc.run_id, "hp_beta1"] == 0.9 and np.isnan(runs.loc[loss.run_id, "hp_beta1"])
    assert runs.loc[loss.run_id, "final_valid_loss"] == pytest.approx(0.2)
    # wide and long agree, and both convert back to the same Results
    wide = analysis.load_curves(d)
    assert len(wide) == 7 and {"lr", "minibatch_loss", "wall_time", "valid_accuracy"} <= set(wide.columns)
    r1, r2 = Results.from_frame(long), Results.from_frame(wide)
    for f in ("valid_loss", "test_loss", "test_accuracy"):
        np.testing.assert_array_equal(np.nan_to_num(r1.evals[f], nan=-1), np.nan_to_num(r2.evals[f], nan=-1))


def test_unreadable_files_and_runs_are_skipped_and_reported(tmp_path, capsys):
    good = [simple_run(0.5 + i / 10, optimizer="sgd", seed=42 + i) for i in range(4)]
    d = _study(tmp_path, good, per_file=2)
    (d / "results" / "garbage.h5").write_bytes(b"not an hdf5 file at all")
    real = (d / "results" / "task-00000.h5").read_bytes()
    (d / "results" / "truncated.h5").write_bytes(real[: len(real) // 3])
    with h5py.File(d / "results" / "badrecord.h5", "w") as f:  # a readable file with one broken run
        g = f.create_group("runs/broken")
        g.attrs["record"] = "{not json"
        g.attrs["status"] = "finished"
        g.create_dataset("evals", data=eval_rows(2), maxshape=(None,), chunks=(64,))
        g2 = f.create_group("runs/noevals")
        g2.attrs["record"] = json.dumps(make_record())
        g2.attrs["status"] = "finished"
    long = analysis.load_results(d)
    assert long["run_id"].nunique() == 4
    bad = dict(long.attrs["unreadable"])
    assert any(p.endswith("garbage.h5") for p in bad) and any(p.endswith("truncated.h5") for p in bad)
    assert any(p.endswith("::broken") for p in bad) and any(p.endswith("::noevals") for p in bad)
    assert "garbage.h5" in capsys.readouterr().err
    assert analysis.load_runs(d).attrs["unreadable"]


def test_other_field_layouts_and_attribute_types(tmp_path):
    """A dataset written with fewer fields (an older layout) loads by field name, the rest NaN; a
    record stored as a fixed-length byte string loads too."""
    d = tmp_path / "study"
    (d / "results").mkdir(parents=True)
    old = np.dtype([("epoch", "<i4"), ("step", "<f8"), ("valid_loss", "<f8"), ("test_loss", "<f8"), ("train_loss", "<f8")])
    rows = np.zeros(3, old)
    rows["epoch"], rows["step"], rows["test_loss"] = [0, 1, 2], [0, 50, 100], [3.0, 2.0, 1.0]
    with h5py.File(d / "results" / "old.h5", "w") as f:
        g = f.create_group("runs/oldrun")
        g.create_dataset("evals", data=rows, maxshape=(None,), chunks=(64,))
        g.attrs["record"] = np.bytes_(json.dumps(make_record(optimizer="adam")))
        g.attrs["status"] = "finished"
    runs = analysis.load_runs(d)
    assert runs["optimizer"].iloc[0] == "adam" and runs["final_test_loss"].iloc[0] == 1.0
    wide = analysis.load_curves(d)
    assert list(wide["step"]) == [0, 50, 100] and wide["minibatch_loss"].isna().all() and wide["lr"].isna().all()


def test_duplicate_run_best_copy_wins(tmp_path):
    """A run re-submitted after a crash appears in two files: the finished copy is taken."""
    run = simple_run(0.9, optimizer="adam", num_epochs=4)
    partial = Run(run["record"], run["evals"][:2], status="running")
    d = tmp_path / "study"
    write_results(d, [partial], prefix="a")
    write_results(d, [run], prefix="b")
    write_results(d, [Run(run["record"], run["evals"][:3], status="failed")], prefix="c")
    runs = analysis.load_runs(d)
    assert len(runs) == 1 and runs["status"].iloc[0] == "finished" and runs["n_evals"].iloc[0] == 5


def test_reader_processes_give_the_same_table(tmp_path):
    runs = [simple_run(0.5 + i / 100, optimizer="sgd", seed=42 + i) for i in range(12)]
    d = _study(tmp_path, runs, per_file=2)
    (d / "results" / "garbage.h5").write_bytes(b"junk")
    a, b = analysis.load_results(d), analysis.load_results(d, workers=3)
    key = ["run_id", "split", "metric", "epoch"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert list(a["run_id"].astype(str)) == list(b["run_id"].astype(str))
    np.testing.assert_array_equal(a["value"], b["value"])
    assert len(b.attrs["unreadable"]) == 1


def test_missing_study_and_empty_study(tmp_path):
    with pytest.raises(FileNotFoundError):
        analysis.load_results(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    long = analysis.load_results(tmp_path / "empty")
    assert long.empty and "value" in long.columns


def test_combine_keeps_categoricals(tmp_path):
    a = analysis.load_results(_study(tmp_path / "a", [simple_run(0.5, optimizer="sgd")]))
    b = analysis.load_results(_study(tmp_path / "b", [simple_run(0.6, optimizer="mynew", problem="other")]))
    both = combine(a, b)
    assert len(both) == len(a) + len(b)
    assert isinstance(both["optimizer"].dtype, pd.CategoricalDtype)
    assert set(both["optimizer"]) == {"sgd", "mynew"} and set(both["problem"]) == {"fmnist_2c2d", "other"}


def test_analysis_never_imports_torch():
    """Login nodes have no torch: every analysis module imports and works with torch blocked."""
    code = """
import sys, tempfile
sys.modules['torch'] = None  # any `import torch` now raises ImportError
import analysis, analysis.load, analysis.table, analysis.performance, analysis.improvement, analysis.choi
import analysis.crossover, analysis.figures, analysis.report, analysis.deepobs, analysis.synthetic
from analysis.synthetic import simple_run, write_results
d = tempfile.mkdtemp()
write_results(d, [simple_run(0.5, optimizer='sgd'), simple_run(0.6, optimizer='adam')])
assert len(analysis.load_results(d))
assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
