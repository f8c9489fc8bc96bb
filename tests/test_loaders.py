"""The on-disk readers, on small files written here by hand in each publisher's real format."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from optbench.errors import OptbenchError
from optbench.problems import datasets, fake_data


@pytest.fixture(autouse=True)
def _fresh_cache():
    datasets.clear_cache()
    yield
    datasets.clear_cache()


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX by the spec: two zero bytes, type 0x08 (unsigned byte), ndim, big-endian uint32 sizes, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist_folder(folder, n_train=20, n_test=10, gz=(True, False, True, False)):
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    arrays = {"train-images-idx3-ubyte": rng.randint(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.randint(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.randint(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.randint(0, 10, n_test)}
    for (name, arr), compress in zip(arrays.items(), gz):
        if compress:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(arr))
        else:
            (folder / name).write_bytes(idx_bytes(arr))
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_plain_and_gz(tmp_path, compress):
    images = np.random.RandomState(1).randint(0, 256, (20, 28, 28)).astype(np.uint8)
    path = tmp_path / ("img.gz" if compress else "img")
    data = idx_bytes(images)
    path.write_bytes(gzip.compress(data) if compress else data)
    out = datasets.read_idx(path)
    assert out.shape == (20, 28, 28) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(OptbenchError, match="magic"):
        datasets.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(OptbenchError, match="header says"):
        datasets.read_idx(short)


@pytest.mark.parametrize("name", ["mnist", "fmnist"])
def test_load_idx_dataset_mixed_gz_and_plain(tmp_path, name):
    arrays = write_mnist_folder(tmp_path / datasets.FOLDERS[name])
    d = datasets.load(name, tmp_path)
    x, y = d["train"]
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(d["test"][0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(d["test"][1], arrays["t10k-labels-idx1-ubyte"])


def test_missing_idx_file_is_one_line_with_name_folder_and_source(tmp_path):
    write_mnist_folder(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(OptbenchError) as e:
        datasets.load_mnist(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path / "mnist") in msg and "yann.lecun.com" in msg


def cifar_batch(x: np.ndarray, labels, key=b"labels") -> dict:
    return {b"batch_label": b"testing", key: list(labels), b"data": x.reshape(len(x), 3072),
            b"filenames": [b"x.png"] * len(x)}


def test_load_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.RandomState(2)
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.randint(0, 256, (2, 3, 32, 32)).astype(np.uint8)
        y = rng.randint(0, 10, 2)
        xs.append(x), ys.append(y)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(cifar_batch(x, y), f)
    xt = rng.randint(0, 256, (10, 3, 32, 32)).astype(np.uint8)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(cifar_batch(xt, range(10)), f)
    d = datasets.load_cifar10(tmp_path)
    x, y = d["train"]
    assert x.shape == (10, 3, 32, 32) and y.dtype == np.int64
    np.testing.assert_array_equal(x, np.concatenate(xs))  # batches 1..5 in order, rows are R, G, B planes
    np.testing.assert_array_equal(y, np.concatenate(ys))
    # the first 1024 values of a row are the red plane
    row = xt.reshape(10, 3072)[3]
    np.testing.assert_array_equal(d["test"][0][3, 0].ravel(), row[:1024])
    np.testing.assert_array_equal(d["test"][1], np.arange(10))


def test_load_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.RandomState(3)
    for split, n in (("train", 12), ("test", 10)):
        batch = cifar_batch(rng.randint(0, 256, (n, 3, 32, 32)).astype(np.uint8), [99 - i for i in range(n)],
                            key=b"fine_labels")
        batch[b"coarse_labels"] = [0] * n
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)
    d = datasets.load_cifar100(tmp_path)
    assert d["train"][0].shape == (12, 3, 32, 32)
    np.testing.assert_array_equal(d["train"][1], 99 - np.arange(12))


def test_missing_cifar_batch(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    expected = r"missing file data_batch_1 in .*cifar-10-batches-py.*cifar-10-python\.tar\.gz"
    with pytest.raises(OptbenchError, match=expected):
        datasets.load_cifar10(tmp_path)


def test_load_svhn_mat(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.RandomState(4)
    X = rng.randint(0, 256, (32, 32, 3, 7)).astype(np.uint8)
    y = np.array([[10], [1], [2], [10], [5], [9], [3]], dtype=np.uint8)
    scipy.io.savemat(folder / "train_32x32.mat", {"X": X, "y": y})
    scipy.io.savemat(folder / "test_32x32.mat", {"X": X[..., :3], "y": y[:3]})
    d = datasets.load_svhn(tmp_path)
    x, labels = d["train"]
    assert x.shape == (7, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[4, 2, 5, 7], X[5, 7, 2, 4])  # x[i, c, h, w] = X[h, w, c, i]
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 5, 9, 3])  # 10 stands for the digit 0
    assert d["test"][0].shape == (3, 3, 32, 32)


def test_missing_svhn(tmp_path):
    with pytest.raises(OptbenchError, match=r"svhn: missing file train_32x32\.mat .*ufldl"):
        datasets.load_svhn(tmp_path)


def test_tolstoi_from_npy(tmp_path):
    folder = tmp_path / "tolstoi"
    folder.mkdir()
    np.save(folder / "train.npy", np.arange(100) % 83)
    np.save(folder / "test.npy", np.arange(30) % 7)
    d = datasets.load_tolstoi(tmp_path)
    assert d["train"].dtype == np.int64 and len(d["train"]) == 100 and len(d["test"]) == 30


def test_tolstoi_from_text_codes_like_deepobs(tmp_path):
    folder = tmp_path / "tolstoi"
    folder.mkdir()
    text = "abracadabra!"  # a×5, b×2, r×2, c×1, d×1, !×1
    (folder / "input.txt").write_text(text, encoding="utf-8")
    d = datasets.load_tolstoi(tmp_path)
    ids = np.concatenate([d["train"], d["test"]])
    vocab = "abrcd!"  # decreasing count, ties in order of first appearance
    np.testing.assert_array_equal(ids, [vocab.index(c) for c in text])
    assert len(d["train"]) == int(np.ceil(0.8 * len(text)))  # DeepOBS: train = ceil(0.8 n)


def test_missing_tolstoi(tmp_path):
    with pytest.raises(OptbenchError) as e:
        datasets.load_tolstoi(tmp_path)
    assert "train.npy" in str(e.value) and "input.txt" in str(e.value) and str(tmp_path / "tolstoi") in str(e.value)


def test_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "env"))
    assert datasets.data_root("/explicit") == datasets.Path("/explicit")
    assert datasets.data_root("") == tmp_path / "env"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.data_root(None) == datasets.Path("~/optbench-data").expanduser()


def test_fake_idx_writer_matches_the_format(tmp_path):
    arr = np.random.RandomState(5).randint(0, 256, (3, 28, 28)).astype(np.uint8)
    path = fake_data.write_idx(tmp_path / "a", arr)
    assert path.read_bytes() == idx_bytes(arr)
    gz = fake_data.write_idx(tmp_path / "b", arr, compress=True)
    assert gz.name == "b.gz" and gzip.decompress(gz.read_bytes()) == idx_bytes(arr)


@pytest.mark.parametrize("name", ["mnist", "fmnist", "cifar10", "cifar100", "svhn"])
def test_fake_datasets_load_like_real_ones(tmp_path, name):
    fake_data.write_fake(name, tmp_path, n_train=15, n_test=5)
    d = datasets.load(name, tmp_path)
    shape = (28, 28) if name in ("mnist", "fmnist") else (3, 32, 32)
    assert d["train"][0].shape == (15, *shape) and d["test"][0].shape == (5, *shape)
    classes = 100 if name == "cifar100" else 10
    assert d["train"][1].min() >= 0 and d["train"][1].max() < classes


def test_fake_tolstoi_both_forms(tmp_path):
    fake_data.write_tolstoi(tmp_path / "a" / "tolstoi", 1000)
    fake_data.write_tolstoi(tmp_path / "b" / "tolstoi", 1000, as_text=True)
    a, b = datasets.load_tolstoi(tmp_path / "a"), datasets.load_tolstoi(tmp_path / "b")
    np.testing.assert_array_equal(a["train"], b["train"])
    np.testing.assert_array_equal(a["test"], b["test"])
