"""Floating-point settings of a training process, set in one place and recorded with every run.

Why this exists: on Ampere and later GPUs PyTorch's defaults mix precisions — cuDNN convolutions
and RNNs may use TF32 (a 10-bit mantissa) while matrix products use full FP32 — so a convnet and an
MLP of the same study would silently train in different arithmetic, and a result would depend on
the GPU generation it happened to run on. The published runs (TensorFlow 1 on pre-Ampere GPUs)
were FP32 throughout; that is the default here (``precision = "fp32"``). ``"tf32"`` opts into
TF32 for all three (matmul, convolution, RNN): several times faster on tensor cores, and a
different optimizer benchmark — compare only runs made with the same setting.

``cudnn_benchmark`` lets cuDNN time its algorithms on the first batches and keep the fastest
(fixed input shapes: all problems here). Off by default: the choice may differ between processes,
so two runs with the same seed may then differ in the last bits.

On a CPU none of this changes anything (these are CUDA/cuDNN settings; the CPU build accepts them).
"""
from __future__ import annotations

from typing import Any

PRECISIONS = ("fp32", "tf32")


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def configure(precision: str = "fp32", cudnn_benchmark: bool = False) -> dict[str, Any]:
    """Set this process's CUDA/cuDNN numerics; returns what was set (for the run's metadata).

    PyTorch's per-backend API (``fp32_precision``) is used, not the legacy ``allow_tf32`` flags:
    PyTorch refuses to mix the two in one process.
    """
    import torch

    mode = "ieee" if check(precision) == "fp32" else "tf32"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode
    torch.backends.cudnn.rnn.fp32_precision = mode
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    return {"precision": precision, "cudnn_benchmark": bool(cudnn_benchmark)}


def current() -> dict[str, Any]:
    """The settings in force now, as PyTorch reports them (for tests and ``optbench bench``)."""
    import torch

    return {"matmul": torch.backends.cuda.matmul.fp32_precision, "conv": torch.backends.cudnn.conv.fp32_precision,
            "rnn": torch.backends.cudnn.rnn.fp32_precision, "cudnn_benchmark": torch.backends.cudnn.benchmark}
