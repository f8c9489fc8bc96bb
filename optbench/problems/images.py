"""Image data for the DeepOBS problems: DeepOBS' splits and TF input pipeline, on the device.

Splits (DeepOBS TensorFlow, ``_make_train_datasets``): the first ``n_valid`` examples of the
training file(s), in file order, are the validation set and the rest is trained on; ``train_eval``
is a fixed subset of ``train_eval_size`` training examples (the first ones); the test set is the
publisher's test file. DeepOBS sets both sizes to the size of the test set (10,000; SVHN 26,032).

Images stay on the device as uint8; the model's first module, :class:`ImagePipeline`, turns them
into network inputs. For CIFAR and SVHN it reproduces DeepOBS' TF preprocessing: in training mode
pad to 36×36 and take a random 32×32 crop, random left-right flip (CIFAR only), random brightness
(±63/255, on the 0–255 scale as in DeepOBS), saturation ×U(0.5, 1.5) (HSV, clipped), contrast
×U(0.2, 1.8); then always ``per_image_standardization``. The random draws use torch's global RNG
on the data's device, which the trainer seeds per run and checkpoints. Evaluation never augments.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
from torch import nn

from optbench.errors import OptbenchError
from optbench.problems import datasets

Arrays = tuple[np.ndarray, np.ndarray]


def holdout_splits(data: Mapping[str, Arrays], n_valid: int, train_eval_size: int, max_train: int = 0,
                   name: str = "") -> dict[str, Arrays]:
    """DeepOBS' split of ``{"train", "test"}`` arrays into train / train_eval / valid / test."""
    x, y = data["train"]
    n = len(x)
    if not 0 <= n_valid < n:
        raise OptbenchError(f"{name}: n_valid={n_valid} must be below the {n} training examples")
    train = (x[n_valid:], y[n_valid:])
    if max_train > 0:
        train = (train[0][:max_train], train[1][:max_train])
    size = min(train_eval_size, len(train[0])) if train_eval_size > 0 else len(train[0])
    return {"train": train, "train_eval": (train[0][:size], train[1][:size]),
            "valid": (x[:n_valid], y[:n_valid]), "test": data["test"]}


def to_device(splits: Mapping[str, Arrays], device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """numpy → torch on ``device``; a split that is a prefix of "train" shares its memory."""
    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    out = {k: (tensor(x), tensor(y)) for k, (x, y) in splits.items() if k != "train_eval"}
    te = len(splits["train_eval"][0])
    out["train_eval"] = (out["train"][0][:te], out["train"][1][:te])
    return out


def load_image_splits(name: str, args: Mapping, device: str, channels_first: bool = True):
    """Load data set ``name`` from ``args["data_dir"]`` and split it as DeepOBS does."""
    data = datasets.load(name, args.get("data_dir", ""))
    if name in ("mnist", "fmnist"):  # (N, 28, 28) → (N, 1, 28, 28)
        data = {k: (x[:, None], y) for k, (x, y) in data.items()}
    if name == "svhn" and int(args.get("train_images", 0)) > 0:
        k = int(args["train_images"])
        data = {"train": (data["train"][0][:k], data["train"][1][:k]), "test": data["test"]}
    splits = holdout_splits(data, int(args["n_valid"]), int(args["train_eval_size"]),
                            int(args.get("max_train", 0)), name)
    return to_device(splits, device)


# --- the TF input pipeline ---------------------------------------------------------------------

def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Zero-pad by ``pad`` on each side, then a random crop back to the input size, per image."""
    b, c, h, w = x.shape
    xp = nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None]
    return xp[batch, :, rows, cols].permute(0, 3, 1, 2)  # advanced indices first: (b, h, w, c)


def uniform(b: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(b, 1, 1, 1, device=like.device, dtype=like.dtype) * (high - low) + low)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """TF ``adjust_saturation`` (RGB→HSV, S·factor clipped to [0, 1], back) in closed form.

    With V = max and S = (max−min)/max, keeping hue and value means every channel moves along
    ``c' = V − (V − c)·S'/S``; TF sets S = 0 where V ≤ 0, which makes the pixel grey at V.
    """
    v = x.amax(dim=1, keepdim=True)
    s = torch.where(v > 0, (v - x.amin(dim=1, keepdim=True)) / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * factor).clamp(0.0, 1.0)
    ratio = torch.where(s > 0, s_new / s.clamp_min(1e-12), torch.zeros_like(s))
    return v - (v - x) * ratio


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * factor + mean


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """TF ``per_image_standardization``: (x − mean) / max(std, 1/√(number of values)), per image."""
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.var(dim=(1, 2, 3), keepdim=True, unbiased=False).sqrt()
    return (x - mean) / std.clamp_min(1.0 / math.sqrt(n))


class ImagePipeline(nn.Module):
    """uint8 images → network input. ``mode``: "unit" (x/255, MNIST) or "standardize" (DeepOBS CIFAR/SVHN)."""

    def __init__(self, mode: str, augment: bool = False, flip: bool = False, crop_pad: int = 2):
        super().__init__()
        if mode not in ("unit", "standardize"):
            raise ValueError(mode)
        self.mode, self.augment, self.flip, self.crop_pad = mode, augment, flip, crop_pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.mode == "unit":
            return x / 255.0
        if self.augment and self.training:
            b = x.shape[0]
            x = random_crop(x, self.crop_pad)
            if self.flip:
                flip = torch.rand(b, 1, 1, 1, device=x.device) < 0.5
                x = torch.where(flip, x.flip(-1), x)
            x = x + uniform(b, -63.0 / 255.0, 63.0 / 255.0, x)
            x = adjust_saturation(x, uniform(b, 0.5, 1.5, x))
            x = adjust_contrast(x, uniform(b, 0.2, 1.8, x))
        return per_image_standardization(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode}, augment={self.augment}, flip={self.flip}"
