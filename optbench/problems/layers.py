"""TensorFlow-1 layer semantics in plain torch, so the DeepOBS networks match the published runs.

The Crowded Valley runs used DeepOBS' TensorFlow problems. Two things differ from torch defaults:

* ``padding="same"`` in TF pads ``max((⌈n/s⌉−1)·s + k − n, 0)`` in total, the smaller half *before*
  (top/left); with an even total torch's symmetric padding is the same, otherwise the extra row and
  column go after. Max pooling pads with −∞. A "same" transposed convolution yields ``n·s`` and
  drops ``(k−s)//2`` leading rows/columns of the full output.
* Initialisers: ``glorot_uniform`` is torch's ``xavier_uniform_``; TF1's ``glorot_normal`` is a
  *truncated* normal (±2σ) with σ = √(2/(fan_in+fan_out)) / 0.8796…; ``truncated_normal_initializer``
  truncates at ±2σ.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TRUNC_STD_CORRECTION = 0.87962566103423978  # std of a standard normal truncated to [-2, 2]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF ``same`` for one spatial dimension."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float = 0.0):
    """Pad ``x`` as TF ``same``; returns (x, symmetric padding to pass to the op)."""
    (t, b), (l, r) = (same_padding(x.shape[-2], kernel[0], stride[0]),
                      same_padding(x.shape[-1], kernel[1], stride[1]))
    if t == b and l == r:  # symmetric: the op pads itself (conv with 0, max pooling with −∞)
        return x, (t, l)
    return F.pad(x, (l, r, t, b), value=value), (0, 0)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF's ``padding="same"`` (possibly asymmetric)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = _pad_same(x, self.kernel_size, self.stride)
        return F.conv2d(x, self.weight, self.bias, self.stride, pad)


class MaxPool2dSame(nn.Module):
    """Max pooling with TF's ``padding="same"`` (padding never wins the max)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride = (kernel_size, kernel_size), (stride, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = _pad_same(x, self.kernel_size, self.stride, value=-math.inf)
        return F.max_pool2d(x, self.kernel_size, self.stride, pad)


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with TF's ``padding="same"``: output size ``n·stride``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h, w = x.shape[-2] * sh, x.shape[-1] * sw
        top, left = max(kh - sh, 0) // 2, max(kw - sw, 0) // 2
        return full[..., top:top + h, left:left + w]


def glorot_uniform_(w: torch.Tensor) -> torch.Tensor:
    return nn.init.xavier_uniform_(w)


def fans(w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) as TF computes them (a 1-d shape counts its length for both)."""
    if w.ndim == 1:
        return w.shape[0], w.shape[0]
    return nn.init._calculate_fan_in_and_fan_out(w)


def truncated_normal_(w: torch.Tensor, std: float) -> torch.Tensor:
    """TF ``truncated_normal_initializer(stddev=std)``: N(0, std²) redrawn outside ±2·std."""
    return nn.init.trunc_normal_(w, mean=0.0, std=std, a=-2 * std, b=2 * std)


def glorot_normal_tf_(w: torch.Tensor) -> torch.Tensor:
    """TF1 ``glorot_normal``: truncated normal with std √(2/(fan_in+fan_out))/0.8796 before truncation."""
    fan_in, fan_out = fans(w)
    return truncated_normal_(w, math.sqrt(2.0 / (fan_in + fan_out)) / TRUNC_STD_CORRECTION)


def init_tf_default_(module: nn.Module) -> None:
    """TF1 layer defaults for every conv/dense below ``module``: glorot_uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            glorot_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
