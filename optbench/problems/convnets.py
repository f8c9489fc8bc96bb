"""The DeepOBS classification networks (TensorFlow version) and their problems P3, P4, P6, P7.

Architectures, initialisers and regularised weights follow ``deepobs/tensorflow/testproblems``
(``_2c2d.py``, ``_3c3d.py``, ``cifar100_allcnnc.py``, ``_wrn.py``); layer by layer in docs/problems.md.
The L2 term is the Task's ``l2/2·Σw²`` over conv and dense kernels (never biases or batch norm),
which equals TF's ``l2_regularizer(l2)`` and the Keras ``l2(0.5·l2)`` DeepOBS uses.
"""
from __future__ import annotations

import torch
from torch import nn

from optbench.problems.base import Task, classification_loss
from optbench.problems.images import ImagePipeline, load_image_splits
from optbench.problems.layers import (Conv2dSame, MaxPool2dSame, glorot_normal_tf_, glorot_uniform_,
                                      truncated_normal_)


class Net2c2d(nn.Sequential):
    """2 conv (5×5, 32 and 64, same, ReLU, 2×2 max pool) + dense 1024 ReLU + dense out.

    All kernels truncated normal (σ 0.05), all biases 0.05."""

    def __init__(self, num_outputs: int = 10):
        super().__init__(
            Conv2dSame(1, 32, 5), nn.ReLU(), MaxPool2dSame(2, 2),
            Conv2dSame(32, 64, 5), nn.ReLU(), MaxPool2dSame(2, 2),
            nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, num_outputs))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                truncated_normal_(m.weight, 0.05)
                nn.init.constant_(m.bias, 0.05)


class Net3c3d(nn.Sequential):
    """conv 5×5 64 valid, pool; conv 3×3 96 valid, pool; conv 3×3 128 same, pool (3×3, stride 2, same);
    dense 512, 256 (ReLU), out. Conv kernels glorot_normal, dense glorot_uniform, biases 0."""

    def __init__(self, num_outputs: int = 10):
        super().__init__(
            nn.Conv2d(3, 64, 5), nn.ReLU(), MaxPool2dSame(3, 2),
            nn.Conv2d(64, 96, 3), nn.ReLU(), MaxPool2dSame(3, 2),
            Conv2dSame(96, 128, 3), nn.ReLU(), MaxPool2dSame(3, 2),
            nn.Flatten(), nn.Linear(3 * 3 * 128, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
            nn.Linear(256, num_outputs))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                glorot_normal_tf_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                glorot_uniform_(m.weight)
                nn.init.zeros_(m.bias)


class AllCNNC(nn.Sequential):
    """All-CNN-C (Springenberg et al. 2015) as DeepOBS builds it: dropout 0.2 on the input, 0.5
    after each stride-2 block; every conv has a ReLU (the last one too) and the logits are the
    spatial mean. Kernels glorot_normal, biases 0.1."""

    def __init__(self, num_outputs: int = 100):
        def conv(cin, cout, k, stride=1, same=True):
            layer = Conv2dSame(cin, cout, k, stride) if same else nn.Conv2d(cin, cout, k, stride)
            return [layer, nn.ReLU()]

        super().__init__(
            nn.Dropout(0.2),
            *conv(3, 96, 3), *conv(96, 96, 3), *conv(96, 96, 3, 2), nn.Dropout(0.5),
            *conv(96, 192, 3), *conv(192, 192, 3), *conv(192, 192, 3, 2), nn.Dropout(0.5),
            *conv(192, 192, 3, same=False), *conv(192, 192, 1), *conv(192, num_outputs, 1),
            SpatialMean())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                glorot_normal_tf_(m.weight)
                nn.init.constant_(m.bias, 0.1)


class SpatialMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # TF momentum (decay) 0.9 is torch momentum 0.1: running = 0.9·running + 0.1·batch
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class WideResidualUnit(nn.Module):
    """Pre-activation unit of DeepOBS' ``_wrn``: BN-ReLU, then conv3×3-BN-ReLU-conv3×3, plus shortcut.

    The first unit of a group takes its shortcut from the pre-activated input: a 1×1 conv when the
    width changes, a max pool when only the stride does, else the identity."""

    def __init__(self, cin: int, cout: int, stride: int, first: bool):
        super().__init__()
        self.first = first
        self.bn1, self.conv1 = batch_norm(cin), Conv2dSame(cin, cout, 3, stride, bias=False)
        self.bn2, self.conv2 = batch_norm(cout), Conv2dSame(cout, cout, 3, 1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if first and cin != cout:
            self.shortcut = Conv2dSame(cin, cout, 1, stride, bias=False)
        elif first and stride > 1:
            self.shortcut = nn.MaxPool2d(stride, stride)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.relu(self.bn1(x))
            shortcut = self.shortcut(x)
        else:
            shortcut = x
            x = self.relu(self.bn1(x))
        x = self.conv1(x)
        x = self.conv2(self.relu(self.bn2(x)))
        return x + shortcut


class WideResNet(nn.Sequential):
    """WRN-d-k of DeepOBS: conv3×3 16, three groups of ``units`` units (16k, 32k, 64k filters,
    strides 1, 2, 2), BN-ReLU, global mean, dense. Convs have no bias; glorot_uniform kernels."""

    def __init__(self, units: int = 2, widen: int = 4, num_outputs: int = 10):
        filters = [16, 16 * widen, 32 * widen, 64 * widen]
        strides = [1, 2, 2]
        layers: list[nn.Module] = [Conv2dSame(3, 16, 3, bias=False)]
        for g in range(3):
            layers.append(WideResidualUnit(filters[g], filters[g + 1], strides[g], first=True))
            layers += [WideResidualUnit(filters[g + 1], filters[g + 1], 1, first=False) for _ in range(1, units)]
        layers += [batch_norm(filters[3]), nn.ReLU(), SpatialMean(), nn.Linear(filters[3], num_outputs)]
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                glorot_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


# --- problems ----------------------------------------------------------------------------------

def _classification_task(spec, args, seed, device, dataset: str, pipeline: ImagePipeline, net_factory) -> Task:
    splits = load_image_splits(dataset, args, device)
    torch.manual_seed(seed)
    model = nn.Sequential(pipeline, net_factory()).to(device)
    return Task(model=model, train=splits["train"],
                splits={k: splits[k] for k in ("train_eval", "valid", "test")},
                loss=classification_loss, l2=spec.l2 or 0.0, eval_batch_size=int(args.get("eval_batch_size", 1000)))


def build_fmnist_2c2d(spec, args, seed, device="cpu") -> Task:
    return _classification_task(spec, args, seed, device, "fmnist", ImagePipeline("unit"), lambda: Net2c2d(10))


def build_cifar10_3c3d(spec, args, seed, device="cpu") -> Task:
    pipeline = ImagePipeline("standardize", augment=bool(args["augment"]), flip=True)
    return _classification_task(spec, args, seed, device, "cifar10", pipeline, lambda: Net3c3d(10))


def build_cifar100_allcnnc(spec, args, seed, device="cpu") -> Task:
    pipeline = ImagePipeline("standardize", augment=bool(args["augment"]), flip=True)
    return _classification_task(spec, args, seed, device, "cifar100", pipeline, lambda: AllCNNC(100))


def build_svhn_wrn164(spec, args, seed, device="cpu") -> Task:
    pipeline = ImagePipeline("standardize", augment=bool(args["augment"]), flip=False)  # no flips for digits
    return _classification_task(spec, args, seed, device, "svhn", pipeline, lambda: WideResNet(2, 4, 10))
