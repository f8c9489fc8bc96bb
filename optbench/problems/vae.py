"""DeepOBS' variational autoencoder (TensorFlow ``_vae.py``): problems P2 mnist_vae and P5 fmnist_vae.

Encoder: three 4×4 convs with 64 filters (strides 2, 2, 1, same padding, leaky ReLU α = 0.3), each
followed by dropout 0.2; two dense heads of 8 units give the mean μ and ``σ_log = 0.5·dense(h)``;
``z = μ + ε·exp(σ_log)``. Decoder: dense 24 and 49 (leaky ReLU), reshape to 7×7×1, three 4×4
transposed convs with 64 filters (strides 2, 1, 1, same, ReLU; dropout 0.2 after the first two),
dense 784 with a sigmoid. Loss per image: Σ(x̂ − x)² + KL = −½Σ(1 + 2σ_log − μ² − e^{2σ_log}),
averaged over the batch. TF layer defaults: glorot_uniform kernels, zero biases. No regularisation,
no accuracy.

DeepOBS samples ε at evaluation too. Here evaluation draws ε from a CPU generator with a fixed seed,
so an evaluation is a deterministic function of the weights, the same on a CPU and a GPU, and does
not advance the training RNG.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from optbench.problems.base import Task
from optbench.problems.images import load_image_splits
from optbench.problems.layers import Conv2dSame, ConvTranspose2dSame, init_tf_default_

EVAL_NOISE_SEED = 0


class VAE(nn.Module):
    def __init__(self, n_latent: int = 8):
        super().__init__()
        self.n_latent = n_latent
        self.enc = nn.ModuleList([Conv2dSame(1, 64, 4, 2), Conv2dSame(64, 64, 4, 2), Conv2dSame(64, 64, 4, 1)])
        self.mean = nn.Linear(7 * 7 * 64, n_latent)
        self.log_std = nn.Linear(7 * 7 * 64, n_latent)
        self.dec_dense = nn.ModuleList([nn.Linear(n_latent, 24), nn.Linear(24, 49)])
        self.dec = nn.ModuleList([ConvTranspose2dSame(1, 64, 4, 2), ConvTranspose2dSame(64, 64, 4, 1),
                                  ConvTranspose2dSame(64, 64, 4, 1)])
        self.out = nn.Linear(14 * 14 * 64, 28 * 28)
        self.drop = nn.Dropout(0.2)
        self._eval_noise: dict[tuple, torch.Tensor] = {}  # (shape, dtype, device) -> the evaluation's ε
        init_tf_default_(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv in self.enc:
            x = self.drop(F.leaky_relu(conv(x), 0.3))
        x = x.flatten(1)
        return self.mean(x), 0.5 * self.log_std(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        for dense in self.dec_dense:
            z = F.leaky_relu(dense(z), 0.3)
        x = z.view(-1, 1, 7, 7)
        for i, deconv in enumerate(self.dec):
            x = F.relu(deconv(x))
            if i < 2:
                x = self.drop(x)
        return torch.sigmoid(self.out(x.flatten(1))).view(-1, 1, 28, 28)

    def _apply(self, fn, recurse=True):
        self._eval_noise.clear()  # moved or cast (.to, .cuda, .half …): the kept draws are made again
        return super()._apply(fn, recurse)

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        if self.training:
            return torch.randn_like(like)
        # drawn on the CPU and copied (a batch x 8 tensor): a GPU's generator would give other numbers,
        # and an evaluation would then depend on the device it ran on. Every batch of a shape gets the
        # same draw (the generator starts from the same seed), so it is made once and kept: a copy from
        # the CPU in each evaluation batch made the host wait for the GPU in each.
        key = (tuple(like.shape), like.dtype, like.device)
        eps = self._eval_noise.get(key)
        if eps is None:
            with torch.inference_mode(False):  # a normal tensor, usable with autograd on as well
                g = torch.Generator().manual_seed(EVAL_NOISE_SEED)
                eps = torch.randn(like.shape, generator=g, dtype=like.dtype).to(like.device)
            self._eval_noise[key] = eps
        return eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_std = self.encode(x)
        z = mean + self.noise(mean) * torch.exp(log_std)
        return self.decode(z), mean, log_std


def vae_loss(model: nn.Module, batch) -> tuple[torch.Tensor, None]:
    x = batch[0].float() / 255.0  # uint8 (N, 1, 28, 28) → [0, 1], as DeepOBS reads MNIST
    img, mean, log_std = model(x)
    reconstruction = (img - x).pow(2).flatten(1).sum(dim=1)
    latent = -0.5 * (1.0 + 2.0 * log_std - mean.pow(2) - torch.exp(2.0 * log_std)).sum(dim=1)
    return (reconstruction + latent).mean(), None


def _build_vae(dataset: str, spec, args, seed, device) -> Task:
    splits = load_image_splits(dataset, args, device)
    torch.manual_seed(seed)
    model = VAE(8).to(device)
    # images only: the labels are not part of the batch
    return Task(model=model, train=(splits["train"][0],),
                splits={k: (splits[k][0],) for k in ("train_eval", "valid", "test")},
                loss=vae_loss, l2=spec.l2 or 0.0, eval_batch_size=int(args.get("eval_batch_size", 1000)))


def build_mnist_vae(spec, args, seed, device="cpu") -> Task:
    return _build_vae("mnist", spec, args, seed, device)


def build_fmnist_vae(spec, args, seed, device="cpu") -> Task:
    return _build_vae("fmnist", spec, args, seed, device)
