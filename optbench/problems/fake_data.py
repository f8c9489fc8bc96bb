"""Tiny stand-in data sets written in the *real* file formats, for smoke tests without downloads.

``write_fake(name, data_dir, n_train, n_test)`` writes a data set that the readers in
:mod:`optbench.problems.datasets` load like the real one. Images are a fixed random pattern per
class plus noise, so a model can learn them in a few steps; the text is a repeated sentence.
Nothing here is used by real runs.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from optbench.problems.datasets import CIFAR10_TRAIN, FOLDERS, IDX_FILES


def class_images(n: int, shape: tuple[int, ...], n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images: one random pattern per class (the same for every seed) plus noise."""
    patterns = np.random.RandomState(1234).randint(0, 256, size=(n_classes, *shape))
    rng = np.random.RandomState(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    noise = rng.randint(-40, 41, size=(n, *shape))
    return np.clip(patterns[y] + noise, 0, 255).astype(np.uint8), y.astype(np.int64)


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_mnist_like(folder: Path, n_train: int, n_test: int, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = class_images(n, (28, 28), 10, seed)
        write_idx(folder / IDX_FILES[f"{split}_images"], x, compress)
        write_idx(folder / IDX_FILES[f"{split}_labels"], y, compress)


def _cifar_batch(x: np.ndarray, y: np.ndarray, label_key: bytes) -> dict:
    return {b"batch_label": b"fake", b"data": x.reshape(len(x), -1), label_key: [int(v) for v in y],
            b"filenames": [f"fake_{i}.png".encode() for i in range(len(x))]}


def write_cifar10(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = class_images(n_train, (3, 32, 32), 10, 0)
    for i, part in enumerate(np.array_split(np.arange(n_train), len(CIFAR10_TRAIN))):
        with open(folder / CIFAR10_TRAIN[i], "wb") as f:
            pickle.dump(_cifar_batch(x[part], y[part], b"labels"), f)
    xt, yt = class_images(n_test, (3, 32, 32), 10, 1)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(xt, yt, b"labels"), f)


def write_cifar100(folder: Path, n_train: int, n_test: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = class_images(n, (3, 32, 32), 100, seed)
        batch = _cifar_batch(x, y, b"fine_labels")
        batch[b"coarse_labels"] = [int(v) // 5 for v in y]
        with open(folder / split, "wb") as f:
            pickle.dump(batch, f)


def write_svhn(folder: Path, n_train: int, n_test: int) -> None:
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = class_images(n, (32, 32, 3), 10, seed)
        y = np.where(y == 0, 10, y)  # SVHN stores the digit 0 as label 10
        mat = {"X": np.ascontiguousarray(np.transpose(x, (1, 2, 3, 0))), "y": y.reshape(-1, 1).astype(np.uint8)}
        scipy.io.savemat(str(folder / f"{split}_32x32.mat"), mat)


FAKE_TEXT = ("Well, Prince, so Genoa and Lucca are now just family estates of the Buonapartes. "
             "But I warn you, if you don't tell me that this means war, I will have nothing more to do with you. ")


def write_tolstoi(folder: Path, n_chars: int, as_text: bool = False) -> None:
    """``n_chars`` characters of a repeated sentence, as input.txt or as train.npy/test.npy."""
    from optbench.problems.datasets import TOLSTOI_TEST_FRACTION, encode_by_frequency

    folder.mkdir(parents=True, exist_ok=True)
    text = (FAKE_TEXT * (n_chars // len(FAKE_TEXT) + 1))[:n_chars]
    if as_text:
        (folder / "input.txt").write_text(text, encoding="utf-8")
        return
    ids, _ = encode_by_frequency(text)
    n_train = int(np.ceil((1.0 - TOLSTOI_TEST_FRACTION) * len(ids)))
    np.save(folder / "train.npy", ids[:n_train])
    np.save(folder / "test.npy", ids[n_train:])


def write_fake(name: str, data_dir: str | Path, n_train: int = 64, n_test: int = 32) -> Path:
    """Write a tiny fake copy of data set ``name`` under ``data_dir``; returns its folder."""
    folder = Path(data_dir) / FOLDERS[name]
    if name in ("mnist", "fmnist"):
        write_mnist_like(folder, n_train, n_test)
    elif name == "cifar10":
        write_cifar10(folder, n_train, n_test)
    elif name == "cifar100":
        write_cifar100(folder, n_train, n_test)
    elif name == "svhn":
        write_svhn(folder, n_train, n_test)
    elif name == "tolstoi":
        write_tolstoi(folder, n_train + n_test)
    else:
        raise KeyError(name)
    return folder
