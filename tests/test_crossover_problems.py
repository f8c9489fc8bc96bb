"""The crossover study's problems (docs/crossover.md): every factor setting builds and learns, the
switches really change the model or the data, and the study files plan."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench import problems
from optbench.errors import OptbenchError
from optbench.planner import expand
from optbench.problems.imbalanced import class_counts, subsample_classes
from optbench.problems.transformer_lm import CausalLinearMixer, CausalSelfAttention, TransformerLM
from optbench.study import load_study

ROOT = Path(__file__).resolve().parents[1]
TF = [f"tokens_tf_{d}_{a}_{f}" for d in ("uniform", "zipf") for a in ("softmax", "none") for f in ("relu", "gelu")]
CLS = [f"{d}_mlp_{c}" for d in ("digits", "mnist1d") for c in ("balanced", "heavy_tailed")]
TINY_TF = {"vocab": 32, "n_train_tokens": 4096, "n_eval_tokens": 1024, "seq_len": 16, "width": 32, "layers": 1,
           "heads": 2}
TINY_CLS = {"digits": {}, "mnist1d": {"num_samples": 1000, "n_valid": 100}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str) -> dict:
    return dict(TINY_TF) if name.startswith("tokens_tf_") else dict(TINY_CLS[problems.get(name).args["dataset"]])


def test_factor_problems_registered_with_their_settings():
    for name in TF:
        spec = problems.get(name)
        _, _, dist, attn, act = name.split("_")
        assert (spec.args["distribution"], spec.args["attention"], spec.args["activation"]) == (dist, attn, act)
        assert spec.metric == "loss"
    for name in CLS:
        spec = problems.get(name)
        assert spec.args["classes"] == name.split("_mlp_")[1] and spec.args["dataset"] == name.split("_")[0]
        assert spec.metric == "accuracy"


@pytest.mark.parametrize("name", TF + CLS)
def test_builds_and_loss_falls(name):
    torch.manual_seed(0)
    task = problems.build(name, tiny(name), seed=1)
    assert set(task.splits) == {"train_eval", "valid", "test"}
    idx = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(0))[:16]
    batch = tuple(t[idx] for t in task.train)
    opt = torch.optim.Adam(task.model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss, acc = task.loss(task.model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
    assert acc is None  # a training batch's accuracy is left out (no loop uses it)
    task.model.eval()
    with torch.inference_mode():
        _, acc = task.loss(task.model, batch)
    assert 0.0 <= float(acc) <= 1.0


@pytest.mark.parametrize("name", ["tokens_tf_zipf_softmax_gelu", "digits_mlp_heavy_tailed"])
def test_run_seed_sets_the_initialisation_and_data_stays_fixed(name):
    """Seed re-runs must differ in their initialisation (else the bootstrap over seeds sees no spread)
    while the data (fixed by data_seed) is the same for every run."""
    a, b, c = (problems.build(name, tiny(name), seed=s) for s in (1, 1, 2))
    pa, pb, pc = (torch.cat([p.detach().flatten() for p in t.model.parameters()]) for t in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    for x, y in zip(a.train, c.train):
        assert torch.equal(x, y)


@pytest.mark.parametrize("attention", ["softmax", "none"])
def test_transformer_parameter_count(attention):
    """Counted from the architecture in docs/crossover.md (defaults: vocab 256, seq 32, width 64, 2 layers)."""
    spec = problems.get(f"tokens_tf_zipf_{attention}_gelu")
    v, t, w, n = (spec.args[k] for k in ("vocab", "seq_len", "width", "layers"))
    layer_norm = 2 * w
    linear = lambda i, o: i * o + o
    mixer = linear(w, 3 * w) + linear(w, w) if attention == "softmax" else 2 * linear(w, w) + t * t
    block = 2 * layer_norm + mixer + linear(w, 4 * w) + linear(4 * w, w)
    expected = v * w + t * w + n * block + layer_norm + linear(w, v)
    model = TransformerLM(v, t, w, n, spec.args["heads"], attention=attention)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert expected == {"softmax": 135_168, "none": 120_576}[attention]  # the numbers docs/crossover.md quotes


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_attention_switch_changes_the_model():
    soft = TransformerLM(32, 16, 32, 2, 2, attention="softmax", activation="gelu")
    none = TransformerLM(32, 16, 32, 2, 2, attention="none", activation="gelu")
    assert sum(isinstance(m, CausalSelfAttention) for m in soft.modules()) == 2
    assert not any(isinstance(m, CausalSelfAttention) for m in none.modules())
    assert sum(isinstance(m, CausalLinearMixer) for m in none.modules()) == 2
    assert not any("qkv" in n for n, _ in none.named_parameters())
    assert any("qkv" in n for n, _ in soft.named_parameters())
    # causal: a change at position 10 leaves positions 0…9 unchanged, for both mixers
    tokens = torch.randint(0, 32, (2, 16))
    changed = tokens.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 32
    for model in (soft, none):
        a, b = _outputs(model, tokens), _outputs(model, changed)
        assert torch.allclose(a[:, :10], b[:, :10], atol=1e-6)
        assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_attention_free_mixer_is_linear_and_data_independent():
    mixer = CausalLinearMixer(8, 6)
    x, y = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    with torch.no_grad():
        zero = mixer(torch.zeros_like(x))
        f = lambda z: mixer(z) - zero  # the constant (biases) removed: a linear map of the input
        assert torch.allclose(f(x + y), f(x) + f(y), atol=1e-5)
        assert torch.allclose(f(3 * x), 3 * f(x), atol=1e-5)
    # initialised to the causal mean over positions
    assert torch.allclose(mixer.mix.sum(dim=1), torch.ones(6)) and torch.all(torch.triu(mixer.mix, 1) == 0)


def test_activation_switch_changes_outputs_with_the_same_weights():
    torch.manual_seed(0)
    relu = TransformerLM(32, 16, 32, 1, 2, attention="softmax", activation="relu")
    gelu = TransformerLM(32, 16, 32, 1, 2, attention="softmax", activation="gelu")
    gelu.load_state_dict(relu.state_dict())
    assert isinstance(relu.blocks[0].mlp[1], torch.nn.ReLU) and isinstance(gelu.blocks[0].mlp[1], torch.nn.GELU)
    x = torch.randint(0, 32, (2, 16))
    assert not torch.allclose(_outputs(relu, x), _outputs(gelu, x))


def test_unknown_switch_values_fail_clearly():
    with pytest.raises(OptbenchError, match="attention"):
        TransformerLM(32, 16, attention="linear")
    with pytest.raises(OptbenchError, match="activation"):
        TransformerLM(32, 16, activation="tanh")
    with pytest.raises(OptbenchError, match="classes"):
        class_counts(10, "long_tailed")


def test_vocabulary_switch_changes_the_token_distribution():
    uni = problems.build("tokens_tf_uniform_softmax_relu", TINY_TF, seed=0).train[1]
    zipf = problems.build("tokens_tf_zipf_softmax_relu", TINY_TF, seed=0).train[1]
    f_uni = np.bincount(uni.flatten().numpy(), minlength=32) / uni.numel()
    f_zipf = np.bincount(zipf.flatten().numpy(), minlength=32) / zipf.numel()
    assert f_uni.max() < 2.0 / 32
    p0 = 1.0 / np.sum(1.0 / np.arange(1, 33))  # Zipf(1) probability of the most frequent token
    assert abs(f_zipf[0] - p0) < 0.03 and f_zipf[0] > 5 * f_zipf[-8:].mean()


@pytest.mark.parametrize("n", [1, 7, 118, 1000])
def test_heavy_tailed_counts_are_ceil_n_over_i_plus_1(n):
    assert class_counts(n, "heavy_tailed") == [math.ceil(n / (i + 1)) for i in range(10)]
    assert class_counts(n, "balanced") == [n] * 10


@pytest.mark.parametrize("dataset", ["digits", "mnist1d"])
def test_heavy_tailed_training_split_and_balanced_eval_splits(dataset):
    args = TINY_CLS[dataset]
    bal = problems.build(f"{dataset}_mlp_balanced", args, seed=0)
    heavy = problems.build(f"{dataset}_mlp_heavy_tailed", args, seed=0)
    cb = np.bincount(bal.train[1].numpy(), minlength=10)
    ch = np.bincount(heavy.train[1].numpy(), minlength=10)
    n = int(cb[0])
    assert np.all(cb == n) and n > 0
    assert list(ch) == [math.ceil(n / (i + 1)) for i in range(10)]
    for split in ("valid", "test"):  # exactly balanced, the same for both settings
        for a, b in zip(bal.splits[split], heavy.splits[split]):
            assert torch.equal(a, b)
        counts = np.bincount(bal.splits[split][1].numpy(), minlength=10)
        assert counts.min() == counts.max() > 0
    # the heavy-tailed examples are a subset of the balanced ones (the same permutation, truncated)
    rows_b = {tuple(r) for r in bal.train[0].numpy().round(6).tolist()}
    assert all(tuple(r) in rows_b for r in heavy.train[0].numpy().round(6).tolist())


def test_subsample_is_deterministic_and_seeded():
    y = np.repeat(np.arange(10), 20)
    a, b = subsample_classes(y, "heavy_tailed", 0), subsample_classes(y, "heavy_tailed", 0)
    assert np.array_equal(a, b) and len(a) == sum(math.ceil(20 / (i + 1)) for i in range(10))
    assert not np.array_equal(a, subsample_classes(y, "heavy_tailed", 1))


@pytest.mark.parametrize("study_file", ["crossover.toml", "crossover_small.toml"])
def test_crossover_studies_parse_and_plan(study_file):
    study = load_study(ROOT / "jobs" / study_file)
    assert study.search == "halton" and study.schedules == ("warmup_cosine",)
    assert study.schedule_args["warmup_cosine"] == {"warmup_fraction": 0.1}
    assert set(study.optimizers) == {"momentum", "adam"}
    beta = study.fixed["momentum"]["momentum"]
    assert study.fixed["adam"]["beta1"] == study.fixed["adam"]["beta2"] == beta
    assert set(study.space("momentum")) == {"lr"} and set(study.space("adam")) == {"lr"}
    runs = list(expand(study))
    for p in study.problems:  # every batch size of a problem trains for the same number of epochs
        setting = study.settings[p]
        assert len(setting.batch_sizes) >= 3 and all(b & (b - 1) == 0 for b in setting.batch_sizes)
        assert {r.num_epochs for r in runs if r.problem == p} == {setting.num_epochs}
    tuning = [r for r in runs if r.kind == "tuning"]
    assert all(dict(r.hparams)["momentum" if r.optimizer == "momentum" else "beta1"] == beta for r in tuning)
    if study_file == "crossover_small.toml":
        assert len(runs) <= 500
        factors = {problems.get(p).args.get(k) for p in study.problems for k in ("distribution", "attention",
                                                                                    "activation", "classes")}
        assert {"uniform", "zipf", "softmax", "none", "relu", "gelu", "balanced", "heavy_tailed"} <= factors
