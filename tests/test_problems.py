"""Problems: every registered problem builds on a tiny data set and learns; the networks have the
published parameter counts; the TF layer semantics, input pipeline and data generators hold."""
from __future__ import annotations

import colorsys
import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from optbench import problems
from optbench.errors import OptbenchError
from optbench.problems import datasets, fake_data
from optbench.problems.convnets import AllCNNC, Net2c2d, Net3c3d, WideResNet
from optbench.problems.images import (ImagePipeline, adjust_saturation, holdout_splits, per_image_standardization,
                                      random_crop)
from optbench.problems.layers import Conv2dSame, ConvTranspose2dSame, MaxPool2dSame, same_padding
from optbench.problems.synthetic_tokens import synthetic_tokens, unigram_probs
from optbench.problems.tolstoi import TFLSTMLayer, TolstoiCharRNN
from optbench.problems.vae import VAE
from optbench.trainer import evaluate
from tests.conftest import direct_quadratic_mean

CROWDED_VALLEY = ["quadratic_deep", "mnist_vae", "fmnist_2c2d", "cifar10_3c3d", "fmnist_vae",
                  "cifar100_allcnnc", "svhn_wrn164", "tolstoi_char_rnn"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Tiny fake copies of every on-disk data set, in the real file formats."""
    root = tmp_path_factory.mktemp("optbench-data")
    for name in ("mnist", "fmnist", "cifar10", "cifar100", "svhn"):
        fake_data.write_fake(name, root, n_train=48, n_test=16)
    fake_data.write_tolstoi(root / "tolstoi", 12_000)
    datasets.clear_cache()
    return root


def tiny_args(name: str, data_dir) -> dict:
    images = {"data_dir": str(data_dir), "n_valid": 16, "train_eval_size": 16}
    return {
        "quadratic_deep": {"train_size": 256},
        "digits_mlp": {},
        "shakespeare_char_rnn": {"num_chars": 20_000, "hidden": 32},
        "mnist_vae": images, "fmnist_vae": images, "fmnist_2c2d": images, "cifar10_3c3d": images,
        "cifar100_allcnnc": images, "svhn_wrn164": {**images, "train_images": 0},
        "tolstoi_char_rnn": {"data_dir": str(data_dir), "n_valid": 2_000, "train_eval_size": 1_000},
        "mnist1d_mlp": {"num_samples": 600, "n_valid": 100},
        "uniform_tokens_lm": {"vocab": 64, "n_train_tokens": 20_000, "n_eval_tokens": 2_000},
        "zipf_tokens_lm": {"vocab": 64, "n_train_tokens": 20_000, "n_eval_tokens": 2_000},
    }[name]


# (steps, batch size, Adam learning rate) per problem: small enough for a 2-core CPU
TRAINING = {"quadratic_deep": (30, 32, 0.05), "digits_mlp": (30, 32, 1e-2), "shakespeare_char_rnn": (30, 16, 1e-2),
            "mnist_vae": (8, 4, 1e-3), "fmnist_vae": (8, 4, 1e-3), "fmnist_2c2d": (8, 4, 1e-3),
            "cifar10_3c3d": (10, 4, 1e-3), "cifar100_allcnnc": (8, 4, 1e-3), "svhn_wrn164": (8, 4, 1e-3),
            "tolstoi_char_rnn": (15, 8, 1e-2), "mnist1d_mlp": (30, 32, 1e-2),
            "uniform_tokens_lm": (30, 16, 1e-2), "zipf_tokens_lm": (30, 16, 1e-2)}


def test_registry_imports_no_torch():
    code = "import optbench.problems, sys; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_problem_is_tested_and_well_formed():
    from tests.test_crossover_problems import CLS, TF  # the crossover factor problems are trained there
    assert set(TRAINING).isdisjoint(TF + CLS)
    assert set(TRAINING) | set(TF + CLS) == set(problems.PROBLEMS)
    for name in CROWDED_VALLEY:
        assert name in problems.PROBLEMS
    for spec in problems.PROBLEMS.values():
        assert spec.metric in ("loss", "accuracy")
        for key, value in spec.args.items():  # study files type-check overrides against the defaults
            assert value is not None, (spec.name, key)


@pytest.mark.parametrize("name, batch, epochs, l2, metric", [
    ("quadratic_deep", 128, 100, None, "loss"), ("mnist_vae", 64, 50, None, "loss"),
    ("fmnist_2c2d", 128, 100, None, "accuracy"), ("cifar10_3c3d", 128, 100, 0.002, "accuracy"),
    ("fmnist_vae", 64, 100, None, "loss"), ("cifar100_allcnnc", 256, 350, 5e-4, "accuracy"),
    ("svhn_wrn164", 128, 160, 5e-4, "accuracy"), ("tolstoi_char_rnn", 50, 200, None, "accuracy")])
def test_crowded_valley_settings(name, batch, epochs, l2, metric):
    spec = problems.get(name)
    assert (spec.batch_size, spec.num_epochs, spec.l2, spec.metric) == (batch, epochs, l2, metric)


def train_fixed_batch(task, steps: int, batch_size: int, lr: float) -> list[float]:
    """Adam on one fixed minibatch (with the task's L2 term); the minibatch losses."""
    idx = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(0))[:batch_size]
    batch = tuple(t[idx] for t in task.train)
    opt = torch.optim.Adam(task.model.parameters(), lr=lr)
    task.model.train()
    losses = []
    for _ in range(steps):
        loss, _ = task.loss(task.model, batch)
        reg = task.regularizer()
        opt.zero_grad(set_to_none=True)
        (loss if reg is None else loss + reg).backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_problem_builds_and_learns(name, data_dir):
    torch.manual_seed(0)
    task = problems.build(name, tiny_args(name, data_dir), seed=1)
    assert set(task.splits) == {"train_eval", "valid", "test"}
    for split in task.splits.values():
        assert len(split) == len(task.train) and split[0].shape[1:] == task.train[0].shape[1:]
    steps, batch_size, lr = TRAINING[name]
    losses = train_fixed_batch(task, steps, batch_size, lr)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < losses[0], losses
    loss, acc = evaluate(task, task.splits["test"])
    assert math.isfinite(loss)
    assert math.isnan(acc) == (problems.get(name).metric == "loss" and name != "uniform_tokens_lm"
                               and name != "zipf_tokens_lm")


# --- parameter counts, by hand from the published layer shapes ---------------------------------

def conv(k, cin, cout, bias=True):
    return k * k * cin * cout + (cout if bias else 0)


def dense(n_in, n_out):
    return n_in * n_out + n_out


def bn(c):
    return 2 * c  # γ and β


def tf_lstm(n_in, hidden):
    return (n_in + hidden) * 4 * hidden + 4 * hidden  # one kernel over [input, state], one bias per gate


def wrn_count(units=2, widen=4, classes=10):
    filters = [16, 16 * widen, 32 * widen, 64 * widen]
    total = conv(3, 3, 16, bias=False)
    for cin, cout in zip(filters, filters[1:]):
        total += bn(cin) + conv(1, cin, cout, bias=False) + conv(3, cin, cout, bias=False) + bn(cout) \
            + conv(3, cout, cout, bias=False)
        total += (units - 1) * (2 * bn(cout) + 2 * conv(3, cout, cout, bias=False))
    return total + bn(filters[3]) + dense(filters[3], classes)


PUBLISHED_COUNTS = {
    "2c2d": (conv(5, 1, 32) + conv(5, 32, 64) + dense(7 * 7 * 64, 1024) + dense(1024, 10), 3_274_634),
    "3c3d": (conv(5, 3, 64) + conv(3, 64, 96) + conv(3, 96, 128) + dense(3 * 3 * 128, 512) + dense(512, 256)
             + dense(256, 10), 895_210),
    "allcnnc": (conv(3, 3, 96) + 2 * conv(3, 96, 96) + conv(3, 96, 192) + 2 * conv(3, 192, 192)
                + conv(3, 192, 192) + conv(1, 192, 192) + conv(1, 192, 100), 1_387_108),
    "wrn164": (wrn_count(), 2_748_890),
    "vae": (conv(4, 1, 64) + 2 * conv(4, 64, 64) + 2 * dense(7 * 7 * 64, 8)  # encoder, μ and σ heads
            + dense(8, 24) + dense(24, 49) + conv(4, 1, 64) + 2 * conv(4, 64, 64) + dense(14 * 14 * 64, 784),
            10_151_489),
    "char_rnn": (83 * 128 + 2 * tf_lstm(128, 128) + dense(128, 83), 284_499),
}
MODELS = {"2c2d": lambda: Net2c2d(10), "3c3d": lambda: Net3c3d(10), "allcnnc": lambda: AllCNNC(100),
          "wrn164": lambda: WideResNet(2, 4, 10), "vae": lambda: VAE(8), "char_rnn": lambda: TolstoiCharRNN(83, 128, 2)}


@pytest.mark.parametrize("arch", sorted(PUBLISHED_COUNTS))
def test_parameter_count_matches_published_architecture(arch):
    by_hand, published = PUBLISHED_COUNTS[arch]
    assert by_hand == published
    assert sum(p.numel() for p in MODELS[arch]().parameters()) == by_hand


def test_offline_models_parameter_counts(data_dir):
    mlp = problems.build("mnist1d_mlp", tiny_args("mnist1d_mlp", data_dir), seed=0).model
    assert sum(p.numel() for p in mlp.parameters()) == dense(40, 100) + dense(100, 100) + dense(100, 10)
    lm = problems.build("zipf_tokens_lm", tiny_args("zipf_tokens_lm", data_dir), seed=0).model
    assert sum(p.numel() for p in lm.parameters()) == 64 * 128 + dense(128, 128) + dense(128, 64)
    quad = problems.build("quadratic_deep", {"train_size": 8}, seed=0).model
    assert sum(p.numel() for p in quad.parameters()) == 100


# --- TF semantics of the layers ------------------------------------------------------------------

def test_same_padding_matches_tf_rule():
    assert same_padding(32, 3, 2) == (0, 1)   # All-CNN-C / WRN stride-2 convs: the extra row goes after
    assert same_padding(28, 3, 2) == (0, 1)   # 3c3d pooling
    assert same_padding(7, 4, 1) == (1, 2)    # VAE third conv
    assert same_padding(28, 4, 2) == (1, 1)
    assert same_padding(32, 1, 2) == (0, 0)


def test_conv_same_pads_asymmetrically_like_tf():
    torch.manual_seed(0)
    layer = Conv2dSame(2, 3, 3, stride=2)
    x = torch.randn(1, 2, 32, 32)
    ref = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.weight, layer.bias, stride=2)
    assert layer(x).shape == (1, 3, 16, 16)
    torch.testing.assert_close(layer(x), ref)


def test_max_pool_same_ignores_padding():
    x = -torch.rand(1, 1, 28, 28) - 1.0  # all negative: zero padding would win the max
    out = MaxPool2dSame(3, 2)(x)
    assert out.shape == (1, 1, 14, 14) and (out < -0.5).all()


@pytest.mark.parametrize("size, stride", [(7, 2), (14, 1), (7, 1)])
def test_transposed_conv_same_is_the_adjoint_of_conv_same(size, stride):
    """TF's conv2d_transpose is the gradient of conv2d with the same padding: check ⟨Ax, y⟩ = ⟨x, Aᵀy⟩."""
    torch.manual_seed(1)
    forward = Conv2dSame(3, 5, 4, stride, bias=False)
    transpose = ConvTranspose2dSame(5, 3, 4, stride, bias=False)
    transpose.weight.data = forward.weight.data.clone()
    x = torch.randn(2, 3, size * stride, size * stride, dtype=torch.float64)
    y = torch.randn(2, 5, size, size, dtype=torch.float64)
    forward, transpose = forward.double(), transpose.double()
    assert transpose(y).shape == x.shape
    torch.testing.assert_close((forward(x) * y).sum(), (x * transpose(y)).sum())


def test_tf_lstm_layer_is_an_lstm_with_one_bias():
    torch.manual_seed(2)
    layer = TFLSTMLayer(6, 5)
    w = layer.lstm.weight_ih_l0.detach()
    assert torch.equal(w[5:10, -1], torch.ones(5)) and w[:5, -1].abs().sum() == 0  # forget gate bias 1
    ref = torch.nn.LSTM(6, 5, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(w[:, :-1])
        ref.bias_ih_l0.copy_(torch.randn(20))
        ref.bias_hh_l0.zero_()
        ref.weight_hh_l0.copy_(layer.lstm.weight_hh_l0)
        layer.lstm.weight_ih_l0[:, -1] = ref.bias_ih_l0
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(layer(x), ref(x)[0])


def test_batch_norm_decay_is_tf_0_9():
    bns = [m for m in WideResNet().modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.1) and m.eps == 1e-5 for m in bns)


def test_l2_covers_kernels_only():
    model = WideResNet()
    decayed = [n for n, p in model.named_parameters() if p.ndim > 1]  # what Task.regularizer uses
    assert all("bn" not in n for n in decayed) and any(n.endswith("weight") for n in decayed)
    norms = sum(bn(m.num_features) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    dense_bias = 10
    assert sum(p.numel() for n, p in model.named_parameters() if p.ndim > 1) == wrn_count() - norms - dense_bias


# --- the input pipeline --------------------------------------------------------------------------

def test_per_image_standardization():
    x = torch.rand(4, 3, 32, 32) * 255
    out = per_image_standardization(x)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(1, 2, 3), unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    flat = per_image_standardization(torch.full((1, 3, 4, 4), 7.0))  # std 0: TF divides by 1/√n
    assert torch.equal(flat, torch.zeros_like(flat))


def test_saturation_matches_hsv_reference():
    rng = np.random.RandomState(0)
    pixels = rng.rand(2, 3, 4, 5)
    factors = np.array([0.6, 1.4])
    out = adjust_saturation(torch.tensor(pixels), torch.tensor(factors).view(2, 1, 1, 1)).numpy()
    for b in range(2):
        for i in range(4):
            for j in range(5):
                h, s, v = colorsys.rgb_to_hsv(*pixels[b, :, i, j])
                expected = colorsys.hsv_to_rgb(h, min(max(s * factors[b], 0.0), 1.0), v)
                np.testing.assert_allclose(out[b, :, i, j], expected, atol=1e-9)


def test_random_crop_is_a_shifted_window():
    x = torch.zeros(6, 1, 32, 32)
    x[:, 0, 10, 20] = 1.0
    out = random_crop(x, 2)
    assert out.shape == x.shape
    for img in out:
        r, c = (img[0] == 1.0).nonzero()[0].tolist()
        assert abs(r - 10) <= 2 and abs(c - 20) <= 2


def test_pipeline_augments_only_in_training():
    torch.manual_seed(3)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    pipe = ImagePipeline("standardize", augment=True, flip=True)
    assert not torch.equal(pipe(x), pipe(x))
    pipe.eval()
    torch.testing.assert_close(pipe(x), per_image_standardization(x.float()))


def test_holdout_takes_validation_from_the_front():
    data = {"train": (np.arange(10), np.arange(10) % 3), "test": (np.arange(4), np.arange(4))}
    s = holdout_splits(data, n_valid=3, train_eval_size=2, max_train=5)
    assert s["valid"][0].tolist() == [0, 1, 2] and s["train"][0].tolist() == [3, 4, 5, 6, 7]
    assert s["train_eval"][0].tolist() == [3, 4]
    with pytest.raises(OptbenchError, match="n_valid"):
        holdout_splits(data, n_valid=10, train_eval_size=2)


def test_vae_evaluation_is_deterministic_and_keeps_the_rng(data_dir):
    task = problems.build("mnist_vae", tiny_args("mnist_vae", data_dir), seed=0)
    state = torch.get_rng_state()
    first = evaluate(task, task.splits["valid"])
    assert evaluate(task, task.splits["valid"])[0] == first[0]
    assert torch.equal(torch.get_rng_state(), state)



def test_vae_evaluation_noise_is_drawn_once_per_shape_and_is_the_fixed_seed_draw():
    """The evaluation's ε is kept per batch shape (a copy to the GPU per batch made the host wait):
    it must be exactly the draw of a fresh generator seeded EVAL_NOISE_SEED, the same object for the
    next batch of that shape, a new draw for another shape, and usable with autograd on after an
    evaluation under inference_mode made it."""
    from optbench.problems.vae import EVAL_NOISE_SEED

    torch.manual_seed(0)
    model = VAE(8).eval()
    like = torch.zeros(5, 8)
    with torch.inference_mode():
        eps = model.noise(like)
    assert torch.equal(eps, torch.randn((5, 8), generator=torch.Generator().manual_seed(EVAL_NOISE_SEED)))
    assert model.noise(like) is eps and model.noise(torch.zeros(3, 8)).shape == (3, 8)
    x = torch.rand(5, 1, 28, 28)
    with torch.inference_mode():
        model(x)
    img, mean, log_std = model(x)  # autograd on, eval mode: the kept ε is a normal tensor
    img.sum().backward()
    assert model.out.weight.grad is not None
    model.train()
    assert not torch.equal(model.noise(like), eps)  # training draws fresh noise
    model.double()  # moved or cast: the kept draws go, and the next evaluation draws in the new dtype
    assert model._eval_noise == {}
    assert model.eval().noise(like.double()).dtype == torch.float64


def test_dataset_problem_without_files_names_the_missing_file(tmp_path):
    with pytest.raises(OptbenchError, match="missing file train-images-idx3-ubyte"):
        problems.build("fmnist_2c2d", {"data_dir": str(tmp_path)}, seed=0)
    with pytest.raises(OptbenchError, match="train_32x32.mat"):
        problems.build("svhn_wrn164", {"data_dir": str(tmp_path)}, seed=0)


def test_tolstoi_rejects_ids_beyond_the_vocabulary(data_dir):
    with pytest.raises(OptbenchError, match="vocab"):
        problems.build("tolstoi_char_rnn", {**tiny_args("tolstoi_char_rnn", data_dir), "vocab": 3}, seed=0)


# --- offline generators --------------------------------------------------------------------------

def test_synthetic_tokens_reproducible():
    a = synthetic_tokens(5000, 50, "zipf", seed=3)
    assert a.dtype == np.int64 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, synthetic_tokens(5000, 50, "zipf", seed=3))
    assert not np.array_equal(a, synthetic_tokens(5000, 50, "zipf", seed=4))


def test_synthetic_token_frequencies_follow_the_distribution():
    n, vocab = 200_000, 100
    zipf = np.bincount(synthetic_tokens(n, vocab, "zipf", seed=0), minlength=vocab) / n
    uni = np.bincount(synthetic_tokens(n, vocab, "uniform", seed=0), minlength=vocab) / n
    p = unigram_probs(vocab, "zipf")
    assert zipf[0] > 10 * np.median(zipf)  # heavy head
    np.testing.assert_allclose(zipf[:20], p[:20], rtol=0.1)  # the label frequencies are p itself
    assert uni.max() < 1.3 * uni.min()


@pytest.mark.parametrize("determinism", [0.0, 0.5, 0.9])
def test_synthetic_tokens_have_the_asked_structure(determinism):
    vocab = 64
    x = synthetic_tokens(100_000, vocab, "uniform", seed=1, determinism=determinism)
    pairs = np.zeros((vocab, vocab))
    np.add.at(pairs, (x[:-1], x[1:]), 1)
    best_bigram_accuracy = pairs.max(axis=1).sum() / pairs.sum()
    expected = determinism + (1 - determinism) / vocab
    assert abs(best_bigram_accuracy - expected) < 0.03


def test_synthetic_tokens_reject_unknown_distribution():
    with pytest.raises(ValueError, match="unknown token distribution"):
        synthetic_tokens(10, 5, "pareto", seed=0)
    with pytest.raises(OptbenchError):
        problems.build("zipf_tokens_lm", {"distribution": "pareto", "n_train_tokens": 100, "n_eval_tokens": 50}, seed=0)


def test_mnist1d_generation_restores_global_rngs():
    from optbench.problems.mnist1d_mlp import mnist1d_arrays

    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    d = mnist1d_arrays(300, seed=7)  # a key no other test uses: really generated here
    assert d["x"].shape == (240, 40) and d["x_test"].shape == (60, 40)
    assert (np.random.rand(), random.random()) == expected


# --- through the real training loop ----------------------------------------------------------------

class _Rows:
    def __init__(self):
        self.rows = []

    def rows_restored(self, rows):
        self.rows = list(rows)

    def append(self, row):
        self.rows.append(row)


def test_augmented_problem_resumes_bit_exact_through_the_trainer(data_dir):
    """The augmentation draws from torch's global RNG, which the trainer checkpoints: a run resumed
    after epoch 1 must reproduce the uninterrupted run."""
    import copy

    from optbench.record import RunRecord
    from optbench.trainer import train_run

    args = tiny_args("cifar10_3c3d", data_dir)
    record = RunRecord(study="t", problem="cifar10_3c3d", optimizer="adam", schedule="none", budget="oneshot",
                       kind="oneshot", trial=-1, seed=42, batch_size=8, num_epochs=2, hparams=(("lr", 1e-3),),
                       problem_args=tuple(sorted(args.items())))
    saved = []

    def keep_first(state):
        if state is None:
            return None
        if not saved:
            saved.append(copy.deepcopy(state))
        return None

    full = _Rows()
    assert train_run(record, sink=full, checkpoint=keep_first) == "finished"
    assert saved[0]["epoch"] == 1 and saved[0]["pos"] == 0
    resumed = _Rows()
    def resume_from_epoch_1(state):
        return copy.deepcopy(saved[0]) if state is None else None

    assert train_run(record, sink=resumed, checkpoint=resume_from_epoch_1) == "finished"
    assert len(full.rows) == len(resumed.rows) == 3
    for name in ("train_loss", "valid_loss", "test_loss", "test_accuracy", "minibatch_loss"):
        assert full.rows[-1][name] == resumed.rows[-1][name], name


# --- P1's closed-form evaluation -----------------------------------------------------------------

def test_quadratic_closed_form_evaluation_is_the_mean_loss_over_each_split():
    """P1 evaluates ½(θ−μ)ᵀQ(θ−μ) + ½·mean (x−μ)ᵀQ(x−μ): it must be the per-example mean loss (to
    float64 rounding, at a θ away from the start) and agree with the batched float32 evaluation."""
    from optbench.trainer import evaluate_split

    task = problems.build("quadratic_deep", {"train_size": 300}, seed=0)
    with torch.no_grad():
        task.model.theta.copy_(torch.linspace(-0.7, 0.9, 100))
    for name, split in task.splits.items():
        direct = direct_quadratic_mean(task.model.theta, task.model.hessian, split[0])
        loss, acc = evaluate_split(task, name)
        assert loss == pytest.approx(direct, rel=1e-12) and math.isnan(acc)
        assert loss == pytest.approx(evaluate(task, split)[0], rel=1e-5)
    # the model moves: the closed form follows it (nothing of θ is cached)
    with torch.no_grad():
        task.model.theta.mul_(-2.0)
    assert evaluate_split(task, "test")[0] == pytest.approx(
        direct_quadratic_mean(task.model.theta, task.model.hessian, task.splits["test"][0]), rel=1e-12)


def test_problems_without_a_closed_form_evaluate_in_batches():
    from optbench.trainer import evaluate_split

    task = problems.build("digits_mlp", {}, seed=0)
    assert task.split_eval is None
    assert evaluate_split(task, "valid") == evaluate(task, task.splits["valid"])


def test_quadratic_loss_beyond_float32_is_infinite():
    """A mean loss float32 cannot hold is inf (the trainer then calls the run diverged), as the batched
    float32 evaluation reported it; NaN stays NaN; a large loss within range is kept."""
    from optbench.trainer import evaluate_split

    task = problems.build("quadratic_deep", {"train_size": 64}, seed=0)
    with torch.no_grad():
        task.model.theta.fill_(1e19)  # θ finite in float32, the loss ~½·1e38·ΣQ ≈ 3e40 > 3.4e38
    assert evaluate_split(task, "test")[0] == math.inf
    assert not math.isfinite(evaluate(task, task.splits["test"])[0])  # what the batched path said (NaN here)
    with torch.no_grad():
        task.model.theta.fill_(1e15)
    loss = evaluate_split(task, "test")[0]
    assert 1e30 < loss < np.finfo(np.float32).max
    with torch.no_grad():
        task.model.theta[0] = float("nan")
    assert math.isnan(evaluate_split(task, "test")[0])


def test_quadratic_runs_share_their_data_but_not_their_model():
    """P1's Q, draws and moments are made once a process (an array task builds many P1 runs); each run
    still gets its own θ and its own copy of Q, so one run's training leaves another's task as built."""
    a = problems.build("quadratic_deep", {"train_size": 96}, seed=0)
    b = problems.build("quadratic_deep", {"train_size": 96}, seed=0)
    assert a.train[0] is b.train[0] and a.splits["test"][0] is b.splits["test"][0]  # built once
    assert a.model.theta is not b.model.theta and a.model.hessian.data_ptr() != b.model.hessian.data_ptr()
    before = b.split_eval("test")[0]
    with torch.no_grad():
        a.model.theta.mul_(3.0)
    assert b.split_eval("test")[0] == before != a.split_eval("test")[0]
    assert problems.build("quadratic_deep", {"train_size": 97}, seed=0).train[0].shape[0] == 97


def test_digits_read_once_a_process_each_run_its_own_tensors():
    """The digits arrays are read from scikit-learn once a process (parsing them was ~20 ms of a run's
    ~21 ms set-up); every build gets the same values — sklearn's, scaled to [0, 1] — in its own tensors."""
    from sklearn.datasets import load_digits

    from optbench.problems.digits import digits_arrays

    d = load_digits()
    a = problems.build("digits_mlp", {}, seed=0)
    b = problems.build("digits_mlp", {}, seed=1)
    x_all = np.concatenate([a.splits[k][0].numpy() for k in ("train_eval", "valid", "test")])
    assert sorted(map(tuple, x_all * 16.0)) == sorted(map(tuple, d.data.astype(np.float32)))
    assert torch.equal(a.train[0], b.train[0]) and a.train[0].data_ptr() != b.train[0].data_ptr()
    a.train[0].add_(1.0)  # one run's data, not the others'
    assert not torch.equal(a.train[0], problems.build("digits_mlp", {}, seed=2).train[0])
    assert digits_arrays.cache_info().hits >= 2 and not digits_arrays()[0].flags.writeable


def test_batched_evaluation_weights_batches_by_size_and_matches_the_running_sum():
    """Splits that do not divide into evaluation batches: the mean over the split is the one-pass
    float64 mean of the per-example losses, bit-identical to summing loss·m batch by batch in float64
    (what the trainer did before it read the batches at once); several splits at once give exactly the
    per-split results; a loss without accuracy gives NaN; the model's mode is restored."""
    from types import SimpleNamespace

    from optbench.trainer import evaluate_splits

    task = problems.build("digits_mlp", {}, seed=0)
    task.eval_batch_size = 100  # valid/test: 270 = 100 + 100 + 70; train_eval: 1257 in 13 batches
    model = task.model
    for name in ("valid", "train_eval"):
        x, y = task.splits[name]
        loss, acc = evaluate(task, (x, y))
        with torch.no_grad():
            logits = model(x).double()
        per_example = F.cross_entropy(logits, y, reduction="none")
        assert loss == pytest.approx(per_example.mean().item(), rel=1e-6)
        assert acc == pytest.approx((logits.argmax(-1) == y).double().mean().item(), rel=1e-6)  # float32 batch means
        # the old running sum on the device, in float64 (in evaluation mode, as the trainer evaluates)
        ls, ac = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        model.eval()
        with torch.inference_mode():
            for i in range(0, x.shape[0], 100):
                bl, ba = task.loss(model, (x[i:i + 100], y[i:i + 100]))
                m = min(100, x.shape[0] - i)
                ls += bl.double() * m
                ac += ba.double() * m
        assert (loss, acc) == (float(ls) / x.shape[0], float(ac) / x.shape[0])
    model.train()
    together = evaluate_splits(task, ["valid", "test", "train_eval"])
    assert together == [evaluate(task, task.splits[n]) for n in ("valid", "test", "train_eval")]
    assert model.training
    model.eval()
    evaluate(task, task.splits["valid"])
    assert not model.training
    no_acc = SimpleNamespace(model=model, eval_batch_size=100, split_eval=None,
                             splits={"valid": task.splits["valid"]},
                             loss=lambda mdl, b: (task.loss(mdl, b)[0], None))
    loss, acc = evaluate_splits(no_acc, ["valid"])[0]
    assert loss == together[0][0] and math.isnan(acc)

    # accuracy on some batches only (every other one), and a split with none at all: each split's own
    # batches decide, as in the running sums (which add an accuracy only where a batch has one)
    calls = []

    def alternating(mdl, b):
        calls.append(None)
        loss, acc = task.loss(mdl, b)
        return loss, (acc if len(calls) % 2 else None)

    def running_sums(split, loss_fn):
        x, y = split
        ls, ac, seen = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64), False
        with torch.inference_mode():
            for i in range(0, x.shape[0], 100):
                bl, ba = loss_fn(model, (x[i:i + 100], y[i:i + 100]))
                m = min(100, x.shape[0] - i)
                ls += bl.double() * m
                if ba is not None:
                    ac += ba.double() * m
                    seen = True
        return float(ls) / x.shape[0], (float(ac) / x.shape[0] if seen else math.nan)

    mixed = SimpleNamespace(model=model, eval_batch_size=100, split_eval=None, splits=task.splits, loss=alternating)
    got = evaluate_splits(mixed, ["valid", "train_eval"])  # 3 batches, then 13: the accuracy on 2 + 6 of them
    calls.clear()
    expected = [running_sums(task.splits[n], alternating) for n in ("valid", "train_eval")]
    assert got == expected and not math.isnan(got[0][1])
    calls.clear()
    first_split_only = SimpleNamespace(model=model, eval_batch_size=100, split_eval=None, splits=task.splits,
                                       loss=lambda mdl, b: (alternating(mdl, b)[0], task.loss(mdl, b)[1]
                                                            if len(calls) <= 3 else None))
    (v_loss, v_acc), (t_loss, t_acc) = evaluate_splits(first_split_only, ["valid", "train_eval"])
    assert (v_loss, v_acc) == together[0] and t_loss == together[2][0] and math.isnan(t_acc)
    one_batch = SimpleNamespace(model=model, eval_batch_size=2000, split_eval=None, splits=task.splits,
                                loss=alternating)
    calls[:] = [None]  # the next call is the second: no accuracy
    assert math.isnan(evaluate_splits(one_batch, ["valid"])[0][1])


def test_evaluation_refuses_a_loss_that_is_not_a_scalar():
    """A problem whose loss is a 1-element vector would otherwise be summed as a Python list."""
    from types import SimpleNamespace

    task = problems.build("digits_mlp", {}, seed=0)
    bad = SimpleNamespace(model=task.model, eval_batch_size=100, split_eval=None, splits=task.splits,
                          loss=lambda mdl, b: (task.loss(mdl, b)[0].reshape(1), None))
    task.model.train()
    with pytest.raises(ValueError, match="0-dim"):
        evaluate(bad, task.splits["valid"])
    assert task.model.training  # the model's mode is restored on the way out
    with pytest.raises(ValueError, match="no examples"):
        evaluate(task, tuple(t[:0] for t in task.splits["valid"]))


def test_char_lstm_layers_are_the_multilayer_lstm_with_its_dropout_bit_for_bit():
    """CharLSTM stacks one-layer LSTMs with nn.Dropout between them (cuDNN's built-in between-layer
    dropout keeps a state outside the RNG state a checkpoint saves). On a CPU it must be the former
    nn.LSTM(num_layers=2, dropout=p) model exactly: the same initial weights from the same seed, the
    same outputs and gradients in training (same dropout masks) and in evaluation, and the former
    model's checkpoints must load into it."""
    from torch import nn

    from optbench.problems.char_rnn import CharLSTM

    class Former(nn.Module):  # the model as it was built before (one 2-layer nn.LSTM)
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(30, 24)
            self.drop = nn.Dropout(0.3)
            self.lstm = nn.LSTM(24, 24, num_layers=2, batch_first=True, dropout=0.3)
            self.head = nn.Linear(24, 30)

        def forward(self, x):
            h, _ = self.lstm(self.drop(self.embed(x)))
            return self.head(self.drop(h))

    torch.manual_seed(3)
    former = Former()
    torch.manual_seed(3)
    now = CharLSTM(30, 24, 2, 0.3)
    assert torch.equal(former.lstm.weight_hh_l1, now.lstms[1].weight_hh_l0)
    x = torch.randint(0, 30, (6, 11))
    for training in (True, False):
        former.train(training)
        now.train(training)
        torch.manual_seed(5)
        y_former = former(x)
        torch.manual_seed(5)
        y_now = now(x)
        assert torch.equal(y_former, y_now)
    torch.manual_seed(7)
    y_former = former.train()(x)
    torch.manual_seed(7)
    y_now = now.train()(x)
    assert torch.equal(y_former, y_now) and not torch.equal(y_now, now.eval()(x))  # masks drawn, the same ones
    torch.manual_seed(9)
    g_former = torch.autograd.grad(former.train()(x).square().mean(), list(former.parameters()))
    torch.manual_seed(9)
    g_now = torch.autograd.grad(now.train()(x).square().mean(), list(now.parameters()))
    assert len(g_former) == len(g_now) == 11 and all(torch.equal(a, b) for a, b in zip(g_former, g_now))
    # a checkpoint of the former model (other values) loads, layer by layer, into the new one
    torch.manual_seed(11)
    other = Former()
    now.load_state_dict(other.state_dict())
    assert torch.equal(now.lstms[0].weight_ih_l0, other.lstm.weight_ih_l0)
    assert torch.equal(now.lstms[1].bias_hh_l0, other.lstm.bias_hh_l1)
    assert torch.equal(now.eval()(x), other.eval()(x))
    # inside another module (a key prefix): the renaming follows it
    torch.manual_seed(13)
    third = Former()
    wrapped = nn.Sequential(CharLSTM(30, 24, 2, 0.3))
    wrapped.load_state_dict(nn.Sequential(third).state_dict())
    assert torch.equal(wrapped[0].lstms[1].weight_ih_l0, third.lstm.weight_ih_l1)


@pytest.mark.parametrize("name", ["digits_mlp", "shakespeare_char_rnn", "uniform_tokens_lm"])
def test_batch_accuracy_is_computed_in_evaluation_only(name):
    """The built-in losses leave a training batch's accuracy out (None: no loop uses it, and it cost a
    digits-MLP step 8 %); in evaluation mode it is the fraction of targets the largest logit predicts,
    checked here against a count made with numpy."""
    task = problems.build(name, tiny_args(name, None), seed=0)
    batch = tuple(t[:32] for t in task.train)
    task.model.train()
    loss, acc = task.loss(task.model, batch)
    assert acc is None and loss.requires_grad
    task.model.eval()
    with torch.inference_mode():
        loss_eval, acc = task.loss(task.model, batch)
        logits = task.model(batch[0]).numpy()
    hits = (logits.argmax(axis=-1) == batch[1].numpy())
    assert float(acc) == pytest.approx(hits.sum() / hits.size, abs=1e-7)
