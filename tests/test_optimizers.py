"""Update rules against independent numpy implementations, defaults, checkpoints and inclusions.

Every optimizer runs 60 steps on a fixed 10-d quadratic ½(θ−x*)ᵀQ(θ−x*) with noisy gradients
(fixed numpy seed), its parameters split over two tensors of different shapes, with a learning rate
that changes every step (as the trainer's schedules do). The reference implementations below are
written from the update formulas (docs/optimizers.md) and share nothing with optbench.optimizers.
"""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from optbench import optimizer_specs, optimizers
from optbench.errors import StudyError
from optbench.search import Dist

SHAPES = [(2, 3), (4,)]
D = 10
STEPS = 60
RTOL, ATOL = 1e-6, 1e-10  # trajectories agree to 1e-6 relative (float64 on both sides)


def _problem(seed=1234):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((D, D)))
    q = basis @ np.diag(np.geomspace(0.1, 10.0, D)) @ basis.T
    return q, rng.standard_normal(D), 0.5 * rng.standard_normal((STEPS, D)), rng.standard_normal(D)


Q, XSTAR, NOISE, THETA0 = _problem()


def grad(theta, t):
    return Q @ (theta - XSTAR) + NOISE[t % STEPS]


def lr_factor(t):  # t = 0-based step index; never zero
    return 0.55 + 0.45 * math.cos(math.pi * t / STEPS)


# ------------------------------------------------------------------ numpy reference update rules
# Each factory returns step(theta, g, lr) -> new theta, keeping its own state; t counts from 1.

def ref_sgd(hp):
    return lambda th, g, lr: th - lr * g


def ref_momentum(hp, nesterov=False):
    s = {"v": np.zeros(D)}

    def step(th, g, lr):
        s["v"] = hp["momentum"] * s["v"] + g
        return th - lr * (g + hp["momentum"] * s["v"] if nesterov else s["v"])
    return step


def ref_adam(hp, ams=False, nesterov=False):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s = {"m": np.zeros(D), "v": np.zeros(D), "vmax": np.zeros(D), "t": 0}

    def step(th, g, lr):
        s["t"] += 1
        t = s["t"]
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        s["vmax"] = np.maximum(s["vmax"], s["v"])
        v = s["vmax"] if ams else s["v"]
        num = b1 * s["m"] + (1 - b1) * g if nesterov else s["m"]
        return th - lr * np.sqrt(1 - b2**t) / (1 - b1**t) * num / (np.sqrt(v) + eps)
    return step


def ref_rmsprop(hp):
    s = {"ms": np.ones(D), "mom": np.zeros(D)}

    def step(th, g, lr):
        s["ms"] = hp["rho"] * s["ms"] + (1 - hp["rho"]) * g * g
        s["mom"] = hp.get("momentum", 0.0) * s["mom"] + lr * g / np.sqrt(s["ms"] + hp["eps"])
        return th - s["mom"]
    return step


def ref_adagrad(hp):
    s = {"acc": np.full(D, hp["initial_accumulator_value"])}

    def step(th, g, lr):
        s["acc"] = s["acc"] + g * g
        return th - lr * g / np.sqrt(s["acc"])
    return step


def ref_adadelta(hp):
    rho, eps = hp["rho"], hp["eps"]
    s = {"acc": np.zeros(D), "upd": np.zeros(D)}

    def step(th, g, lr):
        s["acc"] = rho * s["acc"] + (1 - rho) * g * g
        update = np.sqrt(s["upd"] + eps) / np.sqrt(s["acc"] + eps) * g
        s["upd"] = rho * s["upd"] + (1 - rho) * update * update
        return th - lr * update
    return step


def ref_keras_nadam(hp):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s = {"m": np.zeros(D), "v": np.zeros(D), "sched": 1.0, "t": 0}

    def step(th, g, lr):
        s["t"] += 1
        t = s["t"]
        mu = b1 * (1 - 0.5 * 0.96 ** (t * 0.004))
        mu1 = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * 0.004))
        sched_new = s["sched"] * mu
        sched_next = sched_new * mu1
        s["sched"] = sched_new
        g_prime = g / (1 - sched_new)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        m_prime = s["m"] / (1 - sched_next)
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        v_prime = s["v"] / (1 - b2**t)
        m_bar = (1 - mu) * g_prime + mu1 * m_prime
        return th - lr * m_bar / (np.sqrt(v_prime) + eps)
    return step


def ref_radam(hp, liu_eps=False):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s = {"m": np.zeros(D), "v": np.zeros(D), "t": 0, "rectified": 0}

    def step(th, g, lr):
        s["t"] += 1
        t = s["t"]
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        sma_inf = 2 / (1 - b2) - 1
        sma = sma_inf - 2 * t * b2**t / (1 - b2**t)
        m_hat = s["m"] / (1 - b1**t)
        if sma >= 5:
            s["rectified"] += 1
            r = np.sqrt((sma - 4) / (sma_inf - 4) * (sma - 2) / (sma_inf - 2) * sma_inf / sma)
            if liu_eps:
                return th - lr * r * np.sqrt(1 - b2**t) / (1 - b1**t) * s["m"] / (np.sqrt(s["v"]) + eps)
            return th - lr * r * m_hat / (np.sqrt(s["v"] / (1 - b2**t)) + eps)
        return th - lr * m_hat
    step.state = s
    return step


def ref_adabound(hp, ams=False, base_lr=None, scale=True):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s = {"m": np.zeros(D), "v": np.zeros(D), "vmax": np.zeros(D), "t": 0, "clipped": 0}

    def step(th, g, lr):
        s["t"] += 1
        t = s["t"]
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        s["vmax"] = np.maximum(s["vmax"], s["v"])
        v = s["vmax"] if ams else s["v"]
        final_lr = hp["final_lr"] * (lr / base_lr if scale else 1.0)
        lower = final_lr * (1 - 1 / (hp["gamma"] * t + 1))
        upper = final_lr * (1 + 1 / (hp["gamma"] * t))
        raw = lr * np.sqrt(1 - b2**t) / (1 - b1**t) / (np.sqrt(v) + eps)
        eta = np.clip(raw, lower, upper)
        s["clipped"] += int(np.any(eta != raw))
        return th - eta * s["m"]
    step.state = s
    return step


def ref_adabelief(hp):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    s = {"m": np.zeros(D), "s": np.zeros(D), "t": 0}

    def step(th, g, lr):
        s["t"] += 1
        t = s["t"]
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["s"] = b2 * s["s"] + (1 - b2) * (g - s["m"]) ** 2 + eps
        return th - lr / (1 - b1**t) * s["m"] / (np.sqrt(s["s"] / (1 - b2**t)) + eps)
    return step


def ref_lookahead(inner, hp, theta0):
    s = {"slow": theta0.copy(), "t": 0}

    def step(th, g, lr):
        th = inner(th, g, lr)
        s["t"] += 1
        if s["t"] % int(hp["k"]) == 0:
            s["slow"] = s["slow"] + hp["alpha"] * (th - s["slow"])
            th = s["slow"].copy()
        return th
    return step


# name -> (hyperparameters for make, reference factory); hyperparameters differ from the defaults
# so that the wiring of every keyword is exercised, and ε is large enough that its placement shows.
CASES = {
    "sgd": ({"lr": 0.05}, ref_sgd),
    "momentum": ({"lr": 0.02, "momentum": 0.8}, ref_momentum),
    "nag": ({"lr": 0.02, "momentum": 0.85}, lambda hp: ref_momentum(hp, nesterov=True)),
    "adam": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3}, ref_adam),
    "amsgrad": ({"lr": 0.05, "beta1": 0.7, "beta2": 0.9, "eps": 1e-3}, lambda hp: ref_adam(hp, ams=True)),
    "rmsprop": ({"lr": 0.01, "rho": 0.8, "eps": 1e-3}, ref_rmsprop),
    "adagrad": ({"lr": 0.1, "initial_accumulator_value": 0.2}, ref_adagrad),
    "adadelta": ({"lr": 0.5, "rho": 0.9, "eps": 1e-4}, ref_adadelta),
    "nadam": ({"lr": 0.05, "beta1": 0.85, "beta2": 0.95, "eps": 1e-3}, ref_keras_nadam),
    "radam": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3}, ref_radam),
    "adabound": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "final_lr": 0.05, "gamma": 0.05},
                 lambda hp: ref_adabound(hp, base_lr=hp["lr"])),
    "amsbound": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-3, "final_lr": 0.05, "gamma": 0.05},
                 lambda hp: ref_adabound(hp, ams=True, base_lr=hp["lr"])),
    "adabelief": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.95, "eps": 1e-4}, ref_adabelief),
    "lookahead_momentum": ({"lr": 0.02, "momentum": 0.8, "alpha": 0.3, "k": 7.0},
                           lambda hp: ref_lookahead(ref_momentum(hp), hp, THETA0)),
    "lookahead_radam": ({"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-3, "alpha": 0.4, "k": 5.0},
                        lambda hp: ref_lookahead(ref_radam(hp), hp, THETA0)),
    "choi_sgd": ({"lr": 0.05}, ref_sgd),
    "choi_momentum": ({"lr": 0.02, "momentum": 0.7}, ref_momentum),
    "choi_nesterov": ({"lr": 0.02, "momentum": 0.7}, lambda hp: ref_momentum(hp, nesterov=True)),
    "choi_rmsprop": ({"lr": 0.01, "rho": 0.85, "eps": 1e-2, "momentum": 0.6}, ref_rmsprop),
    "choi_adam": ({"lr": 0.05, "beta1": 0.85, "beta2": 0.97, "eps": 1e-2}, ref_adam),
    "choi_nadam": ({"lr": 0.05, "beta1": 0.85, "beta2": 0.97, "eps": 1e-2},
                   lambda hp: ref_adam(hp, nesterov=True)),
}


# ------------------------------------------------------------------ drivers

def _params(theta, dtype=torch.float64):
    out, i = [], 0
    for shape in SHAPES:
        n = int(np.prod(shape))
        out.append(torch.nn.Parameter(torch.tensor(theta[i:i + n], dtype=dtype).reshape(shape)))
        i += n
    return out


def _flat(params):
    return np.concatenate([p.detach().double().reshape(-1).numpy() for p in params])


def _torch_steps(opt, params, lr0, t_from, t_to, lr_schedule=lr_factor):
    traj = []
    for t in range(t_from, t_to):
        for group in opt.param_groups:
            group["lr"] = lr0 * lr_schedule(t)
        g = grad(_flat(params), t)
        i = 0
        for p in params:
            p.grad = torch.tensor(g[i:i + p.numel()], dtype=p.dtype).reshape(p.shape)
            i += p.numel()
        opt.step()
        traj.append(_flat(params))
    return np.array(traj)


def _ref_traj(step, lr0, steps=STEPS, lr_schedule=lr_factor):
    th, traj = THETA0.copy(), []
    for t in range(steps):
        th = step(th, grad(th, t), lr0 * lr_schedule(t))
        traj.append(th.copy())
    return np.array(traj)


def test_every_registered_optimizer_has_a_case_and_a_factory():
    assert set(CASES) == set(optimizer_specs.OPTIMIZERS) == set(optimizers.FACTORIES)
    assert set(optimizer_specs.CROWDED_VALLEY) | set(optimizer_specs.CHOI) == set(optimizer_specs.OPTIMIZERS)
    assert len(optimizer_specs.CROWDED_VALLEY) == 15


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_numpy_reference(name):
    hp, ref = CASES[name]
    params = _params(THETA0)
    got = _torch_steps(optimizers.make(name, params, **hp), params, hp["lr"], 0, STEPS)
    want = _ref_traj(ref(hp), hp["lr"])
    assert np.linalg.norm(want[-1] - THETA0) > 0.05  # the run moved: the comparison means something
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_reference_cases_reach_every_branch():
    """RAdam runs both its SGD and rectified phases; AdaBound's clipping is active."""
    hp, _ = CASES["radam"]
    step = ref_radam(hp)
    _ref_traj(step, hp["lr"])
    assert 0 < step.state["rectified"] < STEPS
    for name in ("adabound", "amsbound"):
        hp, _ = CASES[name]
        step = ref_adabound(hp, ams=name == "amsbound", base_lr=hp["lr"])
        _ref_traj(step, hp["lr"])
        assert step.state["clipped"] > 0


def test_radam_liu_eps_variant():
    hp, _ = CASES["radam"]
    params = _params(THETA0)
    opt = optimizers.RAdam(params, liu_eps=True, **hp)
    got = _torch_steps(opt, params, hp["lr"], 0, STEPS)
    np.testing.assert_allclose(got, _ref_traj(ref_radam(hp, liu_eps=True), hp["lr"]), rtol=RTOL, atol=ATOL)
    default = _ref_traj(ref_radam(hp), hp["lr"])
    assert np.max(np.abs(got - default)) > 1e-9  # the two ε placements are distinguishable here


def test_adabound_unscaled_final_lr_variant():
    hp, _ = CASES["adabound"]
    params = _params(THETA0)
    opt = optimizers.AdaBound(params, scale_final_lr=False, **hp)
    got = _torch_steps(opt, params, hp["lr"], 0, STEPS)
    want = _ref_traj(ref_adabound(hp, base_lr=hp["lr"], scale=False), hp["lr"])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ defaults and hyperparameters

#: spec §1.2, typed in independently of optimizer_specs
SPEC_TABLE = {
    "amsbound": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-8, "final_lr": .1, "gamma": 1e-3},
                 {"lr", "beta1", "beta2", "final_lr", "gamma"}),
    "amsgrad": ({"lr": 1e-2, "beta1": .9, "beta2": .999, "eps": 1e-8}, {"lr", "beta1", "beta2"}),
    "adabelief": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-14}, {"lr", "beta1", "beta2"}),
    "adabound": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-8, "final_lr": .1, "gamma": 1e-3},
                 {"lr", "beta1", "beta2", "final_lr", "gamma"}),
    "adadelta": ({"lr": 1e-3, "rho": .95, "eps": 1e-8}, {"lr", "rho"}),
    "adagrad": ({"lr": 1e-2, "initial_accumulator_value": .1}, {"lr"}),
    "adam": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-8}, {"lr", "beta1", "beta2"}),
    "lookahead_momentum": ({"lr": 1e-2, "momentum": .99, "alpha": .5, "k": 5}, {"lr", "momentum", "alpha", "k"}),
    "lookahead_radam": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-7, "alpha": .5, "k": 5},
                        {"lr", "beta1", "beta2", "alpha", "k"}),
    "momentum": ({"lr": 1e-2, "momentum": .99}, {"lr", "momentum"}),
    "nag": ({"lr": 1e-2, "momentum": .99}, {"lr", "momentum"}),
    "nadam": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-7}, {"lr", "beta1", "beta2"}),
    "radam": ({"lr": 1e-3, "beta1": .9, "beta2": .999, "eps": 1e-7}, {"lr", "beta1", "beta2"}),
    "rmsprop": ({"lr": 1e-3, "rho": .9, "eps": 1e-10, "momentum": 0.0}, {"lr", "rho"}),
    "sgd": ({"lr": 1e-2}, {"lr"}),
}
SPEC_DISTS = {"lr": Dist("log", 1e-4, 1.0), "momentum": Dist("revlog", 1e-4, 1.0), "rho": Dist("revlog", 1e-4, 1.0),
              "beta1": Dist("uniform", 0.5, 1.0), "beta2": Dist("uniform", 0.8, 1.0),
              "alpha": Dist("log", 1e-4, 1.0), "k": Dist("int", 5, 19),
              "final_lr": Dist("log", 1e-3, 0.5), "gamma": Dist("log", 1e-4, 1e-1)}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_registry_matches_spec_table(name):
    defaults, tuned = SPEC_TABLE[name]
    spec = optimizer_specs.get(name)
    assert dict(spec.defaults) == defaults
    assert set(spec.space) == tuned
    for hp, dist in spec.space.items():
        assert dist == SPEC_DISTS[hp], (name, hp)


def test_choi_optimizers_tune_every_hyperparameter():
    for name in optimizer_specs.CHOI:
        spec = optimizer_specs.get(name)
        assert set(spec.space) == set(spec.defaults), name
    assert "eps" in optimizer_specs.get("choi_adam").space
    assert optimizer_specs.get("choi_rmsprop").space["momentum"].kind == "revlog"


@pytest.mark.parametrize("name", sorted(CASES))
def test_make_without_hparams_gives_the_defaults(name):
    opt = optimizers.make(name, _params(THETA0))
    for group in opt.param_groups:
        for hp, value in optimizer_specs.get(name).defaults.items():
            assert group[hp] == value, (name, hp)
    if name in ("adagrad",):
        assert opt.param_groups[0]["eps"] == 0.0  # TF1 Adagrad has no ε


def test_adagrad_accumulator_starts_at_initial_value():
    params = _params(THETA0)
    opt = optimizers.make("adagrad", params)
    for p in params:
        assert torch.all(opt.state[p]["sum"] == 0.1)


def test_make_overrides_and_casts_integer_k():
    opt = optimizers.make("lookahead_radam", _params(THETA0), lr=0.3, k=12.0, alpha=0.25)
    group = opt.param_groups[0]
    assert group["lr"] == 0.3 and group["alpha"] == 0.25
    assert group["k"] == 12 and isinstance(group["k"], int)
    assert group["eps"] == 1e-7 and group["beta1"] == 0.9
    with pytest.raises(ValueError, match="integer"):
        optimizers.make("lookahead_momentum", _params(THETA0), k=5.5)


def test_unknown_hyperparameter_raises():
    with pytest.raises(ValueError, match="no hyperparameter"):
        optimizers.make("adam", _params(THETA0), rho=0.9)
    with pytest.raises(ValueError, match="no hyperparameter"):
        optimizers.make("adagrad", _params(THETA0), eps=1e-8)  # TF1 Adagrad has no ε
    with pytest.raises(ValueError, match="no hyperparameter"):
        optimizers.make("sgd", _params(THETA0), momentum=0.9)
    with pytest.raises(StudyError, match="unknown optimizer"):
        optimizers.make("adamw", _params(THETA0))


def test_schedule_hyperparameters_are_ignored_by_make():
    opt = optimizers.make("choi_adam", _params(THETA0), lr=0.01, decay_steps_factor=0.8, end_factor=0.01)
    assert opt.param_groups[0]["lr"] == 0.01 and "end_factor" not in opt.param_groups[0]


def test_decoupled_setting_resolves_to_lr():
    spec = optimizer_specs.get("choi_adam")
    setting = spec.setting({"eps": 10.0, "lr_over_eps": 0.003})
    assert "lr_over_eps" not in setting and setting["lr"] == pytest.approx(0.03)
    optimizers.make("choi_adam", _params(THETA0), **setting)


# ------------------------------------------------------------------ checkpoints

def _bitwise_resume(name, hp, split, total=20):
    lr0 = optimizer_specs.get(name).setting(hp)["lr"]
    params = _params(THETA0)
    opt = optimizers.make(name, params, **hp)
    _torch_steps(opt, params, lr0, 0, total)
    straight = [p.detach().clone() for p in params]

    params = _params(THETA0)
    opt = optimizers.make(name, params, **hp)
    _torch_steps(opt, params, lr0, 0, split)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buf)
    del opt
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    params = [torch.nn.Parameter(t.clone()) for t in saved["params"]]
    opt = optimizers.make(name, params, **hp)
    opt.load_state_dict(saved["opt"])
    _torch_steps(opt, params, lr0, split, total)
    return straight, params, opt


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoint_resume_is_bitwise(name):
    hp, _ = CASES[name]
    for split in (10, 7):  # 7: inside a Lookahead period
        straight, resumed, _ = _bitwise_resume(name, hp, split)
        for a, b in zip(straight, resumed):
            assert torch.equal(a, b), (name, split)


def test_lookahead_groups_stay_shared_after_load():
    hp, _ = CASES["lookahead_momentum"]
    _, _, opt = _bitwise_resume("lookahead_momentum", hp, 7)
    opt.param_groups[0]["lr"] = 0.123
    assert opt.base.param_groups[0]["lr"] == 0.123
    state = opt.state_dict()
    assert {"base", "lookahead"} <= set(state)
    assert all("slow" in s for s in state["lookahead"]["state"].values())


# ------------------------------------------------------------------ inclusions (spec §2)
# Tolerance: trajectories agree to 1e-6 relative (atol 1e-10) once ε = 1e10; the neglected terms
# are of relative size √v/ε (Adam, NAdam) and ms/(2ε) (RMSProp), i.e. ≲ 1e-9 here.

BIG_EPS = 1e10


def _b(t, b1, b2):
    return math.sqrt(1 - b2**t) / (1 - b1**t)


def _run(name, hp, lr_of_step):
    """Trajectory with lr set before step t (1-based) to lr_of_step(t)."""
    params = _params(THETA0)
    opt = optimizers.make(name, params, **hp)
    return _torch_steps(opt, params, 1.0, 0, STEPS, lr_schedule=lambda t: lr_of_step(t + 1))


@pytest.mark.parametrize("adaptive, heavy_ball", [("choi_adam", "choi_momentum"), ("choi_nadam", "choi_nesterov")])
def test_adam_and_nadam_follow_momentum_and_nesterov_for_large_eps(adaptive, heavy_ball):
    b1, b2, c = 0.9, 0.999, 0.02  # c: the heavy-ball step size per unit b_t
    alpha = c * BIG_EPS / (1 - b1)
    got = _run(adaptive, {"beta1": b1, "beta2": b2, "eps": BIG_EPS}, lambda t: alpha)
    # γ = β1, η_t = α(1−β1)·b_t/ε
    want = _run(heavy_ball, {"momentum": b1}, lambda t: alpha * (1 - b1) * _b(t, b1, b2) / BIG_EPS)
    assert np.linalg.norm(want[-1] - THETA0) > 0.05
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_rmsprop_follows_momentum_for_large_eps():
    eta_prime, gamma = 0.01, 0.8
    got = _run("choi_rmsprop", {"rho": 0.9, "eps": BIG_EPS, "momentum": gamma},
               lambda t: eta_prime * math.sqrt(BIG_EPS))  # η = η'·√ε
    want = _run("choi_momentum", {"momentum": gamma}, lambda t: eta_prime)
    assert np.linalg.norm(want[-1] - THETA0) > 0.05
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_sgd_is_momentum_with_zero_momentum():
    got = _run("choi_momentum", {"momentum": 0.0}, lambda t: 0.05)
    want = _run("choi_sgd", {}, lambda t: 0.05)
    np.testing.assert_array_equal(got, want)
