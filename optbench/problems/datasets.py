"""Readers for the on-disk data sets of the Crowded Valley problems (numpy only, no torch).

Every reader takes the *data directory* and returns numpy arrays; the problem modules move them to
the device. The data directory is, in order: the problem argument ``data_dir``, the environment
variable ``OPTBENCH_DATA_DIR``, ``~/optbench-data``. Inside it each data set has its own folder,
holding the files exactly as their publishers distribute them (nothing to convert):

========== ====================================== ==================================================
data set   folder                                 files
========== ====================================== ==================================================
MNIST      ``mnist/``                             ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
                                                  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
                                                  (each plain or ``.gz``)
Fashion    ``fmnist/``                            the same four IDX names (plain or ``.gz``)
CIFAR-10   ``cifar-10-batches-py/``               ``data_batch_1`` … ``data_batch_5``, ``test_batch``
CIFAR-100  ``cifar-100-python/``                  ``train``, ``test``
SVHN       ``svhn/``                              ``train_32x32.mat``, ``test_32x32.mat``
Tolstoi    ``tolstoi/``                           ``train.npy`` + ``test.npy`` (DeepOBS' preprocessed
                                                  character ids), or ``input.txt`` (the text)
========== ====================================== ==================================================

A missing file raises :class:`~optbench.errors.OptbenchError` with one line naming the file, the
folder and where to get it. Arrays are cached per process, so a worker that trains many runs of
one problem reads its files once.
"""
from __future__ import annotations

import collections
import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from optbench.errors import OptbenchError

DATA_DIR_ENV = "OPTBENCH_DATA_DIR"
DEFAULT_DATA_DIR = "~/optbench-data"

# Where each data set comes from (shown in the message for a missing file).
SOURCES = {
    "mnist": "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)",
    "fmnist": "https://github.com/zalandoresearch/fashion-mnist (data/fashion/*.gz)",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract into the data directory)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract into the data directory)",
    "svhn": "http://ufldl.stanford.edu/housenumbers/ (train_32x32.mat, test_32x32.mat)",
    "tolstoi": "DeepOBS' deepobs_prepare_data.sh (train.npy, test.npy), or War and Peace as input.txt "
               "(https://www.gutenberg.org/ebooks/2600, trimmed as that script does)",
}
FOLDERS = {"mnist": "mnist", "fmnist": "fmnist", "cifar10": "cifar-10-batches-py",
           "cifar100": "cifar-100-python", "svhn": "svhn", "tolstoi": "tolstoi"}
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TOLSTOI_TEST_FRACTION = 0.2  # DeepOBS _tolstoi_preprocess: test_size=0.2, the last 20 % of the text

_CACHE: dict[tuple, Any] = {}


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument if non-empty, else $OPTBENCH_DATA_DIR, else ~/optbench-data."""
    chosen = str(data_dir) if data_dir else os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def dataset_folder(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    return data_root(data_dir) / FOLDERS[name]


def missing(name: str, filename: str, folder: Path) -> OptbenchError:
    return OptbenchError(f"{name}: missing file {filename} in {folder}; get it from {SOURCES[name]} "
                         f"(data directory: problem argument data_dir, ${DATA_DIR_ENV}, or {DEFAULT_DATA_DIR})")


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = load()
    return _CACHE[key]


def clear_cache() -> None:
    _CACHE.clear()


# --- IDX (MNIST, Fashion-MNIST) ----------------------------------------------------------------

def _find_idx(name: str, folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise missing(name, f"{stem}[.gz]", folder)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip): magic 0x0000 | type | ndim, then ndim big-endian uint32 sizes."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise OptbenchError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise OptbenchError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise OptbenchError(f"{path}: unknown IDX element type 0x{raw[2]:02x}")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(dtypes[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise OptbenchError(f"{path}: IDX header says {shape} ({expected} bytes) but the file has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx_dataset(name: str, data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST-format data set ``name`` ("mnist" or "fmnist"): uint8 images (N, 28, 28), int64 labels."""
    folder = dataset_folder(name, data_dir)

    def load():
        arrays = {k: read_idx(_find_idx(name, folder, stem)) for k, stem in IDX_FILES.items()}
        out = {}
        for split in ("train", "test"):
            x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise OptbenchError(f"{name}: {split} images {x.shape} and labels {y.shape} in {folder} do not match")
            out[split] = (x.astype(np.uint8), y.astype(np.int64))
        return out

    return _cached((name, str(folder)), load)


def load_mnist(data_dir=None):
    return load_idx_dataset("mnist", data_dir)


def load_fmnist(data_dir=None):
    return load_idx_dataset("fmnist", data_dir)


# --- CIFAR (python pickles) --------------------------------------------------------------------

def _unpickle(name: str, folder: Path, filename: str) -> dict:
    path = folder / filename
    if not path.is_file():
        raise missing(name, filename, folder)
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file, reported as one line
        raise OptbenchError(f"{name}: cannot read {path} as a CIFAR python batch: {e}") from None
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_arrays(name: str, folder: Path, batch: dict, label_key: str, filename: str):
    try:
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        y = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise OptbenchError(f"{name}: {folder / filename} is not a CIFAR python batch ({e})") from None
    if len(x) != len(y):
        raise OptbenchError(f"{name}: {folder / filename} has {len(x)} images but {len(y)} labels")
    return x, y


def load_cifar10(data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-10 python batches: uint8 images (N, 3, 32, 32), int64 labels; train = batches 1..5 in order."""
    folder = dataset_folder("cifar10", data_dir)

    def load():
        parts = [_cifar_arrays("cifar10", folder, _unpickle("cifar10", folder, f), "labels", f) for f in CIFAR10_TRAIN]
        test = _cifar_arrays("cifar10", folder, _unpickle("cifar10", folder, "test_batch"), "labels", "test_batch")
        return {"train": (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])),
                "test": test}

    return _cached(("cifar10", str(folder)), load)


def load_cifar100(data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """CIFAR-100 python files ``train`` and ``test`` with the 100 fine labels."""
    folder = dataset_folder("cifar100", data_dir)

    def load():
        return {split: _cifar_arrays("cifar100", folder, _unpickle("cifar100", folder, split), "fine_labels", split)
                for split in ("train", "test")}

    return _cached(("cifar100", str(folder)), load)


# --- SVHN (.mat) -------------------------------------------------------------------------------

def load_svhn(data_dir=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """SVHN cropped digits: X (32, 32, 3, N) → uint8 (N, 3, 32, 32); label 10 (digit 0) → 0."""
    folder = dataset_folder("svhn", data_dir)

    def read(filename):
        path = folder / filename
        if not path.is_file():
            raise missing("svhn", filename, folder)
        import scipy.io

        try:
            m = scipy.io.loadmat(str(path))
            x = np.ascontiguousarray(np.transpose(np.asarray(m["X"], dtype=np.uint8), (3, 2, 0, 1)))
            y = np.asarray(m["y"], dtype=np.int64).reshape(-1)
        except Exception as e:  # noqa: BLE001
            raise OptbenchError(f"svhn: cannot read {path} as an SVHN .mat file: {e}") from None
        if len(x) != len(y):
            raise OptbenchError(f"svhn: {path} has {len(x)} images but {len(y)} labels")
        y = np.where(y == 10, 0, y)
        return x, y

    return _cached(("svhn", str(folder)), lambda: {"train": read("train_32x32.mat"), "test": read("test_32x32.mat")})


# --- Tolstoi (War and Peace, characters) -------------------------------------------------------

def encode_by_frequency(text: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """DeepOBS' coding: characters sorted by decreasing count (ties in order of first appearance)."""
    counts = collections.Counter(text)
    chars = tuple(c for c, _ in sorted(counts.items(), key=lambda kv: -kv[1]))
    table = {c: i for i, c in enumerate(chars)}
    return np.fromiter((table[c] for c in text), dtype=np.int64, count=len(text)), chars


def load_tolstoi(data_dir=None) -> dict[str, np.ndarray]:
    """Character ids of War and Peace: {"train": ids, "test": ids}.

    ``train.npy``/``test.npy`` (written by DeepOBS' preprocessing) are used as they are. Otherwise
    ``input.txt`` is coded as DeepOBS does: vocabulary by frequency, the first ⌈0.8 n⌉ characters
    train, the rest test.
    """
    folder = dataset_folder("tolstoi", data_dir)

    def load():
        train, test = folder / "train.npy", folder / "test.npy"
        if train.is_file() and test.is_file():
            try:
                return {"train": np.load(train).astype(np.int64).reshape(-1),
                        "test": np.load(test).astype(np.int64).reshape(-1)}
            except (OSError, ValueError) as e:
                raise OptbenchError(f"tolstoi: cannot read {train} / {test}: {e}") from None
        text_file = folder / "input.txt"
        if not text_file.is_file():
            raise missing("tolstoi", "train.npy + test.npy (or input.txt)", folder)
        ids, _ = encode_by_frequency(text_file.read_text(encoding="utf-8"))
        n_train = int(np.ceil((1.0 - TOLSTOI_TEST_FRACTION) * len(ids)))
        return {"train": ids[:n_train], "test": ids[n_train:]}

    return _cached(("tolstoi", str(folder)), load)


LOADERS: dict[str, Callable[..., Any]] = {
    "mnist": load_mnist, "fmnist": load_fmnist, "cifar10": load_cifar10, "cifar100": load_cifar100,
    "svhn": load_svhn, "tolstoi": load_tolstoi,
}


def load(name: str, data_dir=None):
    """Load data set ``name`` (a key of :data:`LOADERS`) from the data directory."""
    return LOADERS[name](data_dir)
