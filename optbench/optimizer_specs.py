"""The optimizer registry: defaults and search spaces, no torch (planner and analysis use it).

One-shot defaults and tuned hyperparameters follow Crowded Valley (spec §1.2). The search
distributions are those inferred from the released samples (spec §1.2, [D]). The torch update
rules live in :mod:`optbench.optimizers` and are looked up by the same names.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from optbench.errors import StudyError, did_you_mean
from optbench.search import DECOUPLED_LR, Dist, resolve_decoupled

LR = Dist("log", 1e-4, 1.0)
ONE_MINUS = Dist("revlog", 1e-4, 1.0)  # momentum and ρ: (1 − x) log-uniform on [1e-4, 1]
BETA1 = Dist("uniform", 0.5, 1.0)
BETA2 = Dist("uniform", 0.8, 1.0)
LA_ALPHA = Dist("log", 1e-4, 1.0)  # Lookahead's slow step size
LA_K = Dist("int", 5, 19)  # Lookahead's synchronisation period
FINAL_LR = Dist("log", 1e-3, 0.5)  # AdaBound / AMSBound
GAMMA = Dist("log", 1e-4, 1e-1)  # AdaBound / AMSBound

# Choi et al.: every hyperparameter tuned. Their per-workload ranges (App. D) are [U]; these broad
# ranges are optbench's choice (docs/optimizers.md), overridable per study.
CHOI_LR_SGD = Dist("log", 1e-4, 10.0)
CHOI_LR_ADAPTIVE = Dist("log", 1e-5, 1.0)
CHOI_MOMENTUM = Dist("revlog", 1e-3, 1.0)  # 1 − γ log-uniform on [1e-3, 1]: γ ∈ [0, 0.999]
CHOI_RHO = Dist("revlog", 1e-4, 1.0)
CHOI_BETA1 = Dist("revlog", 1e-3, 1.0)
CHOI_BETA2 = Dist("revlog", 1e-4, 1.0)
CHOI_EPS = Dist("log", 1e-10, 1.0)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    name: str
    label: str  # display name as in the paper
    defaults: Mapping[str, float]  # the one-shot setting
    space: Mapping[str, Dist]  # tuned hyperparameters; the rest stay at their defaults

    def setting(self, tuned: Mapping[str, float] | None = None) -> dict[str, float]:
        """Defaults overridden by ``tuned``; decoupled coordinates (``lr_over_eps`` …) become ``lr``."""
        tuned = dict(tuned or {})
        if any(c in tuned for c in DECOUPLED_LR):
            tuned = resolve_decoupled(tuned, eps_default=self.defaults.get("eps"))
        return {**self.defaults, **tuned}


OPTIMIZERS: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    if spec.name in OPTIMIZERS:
        raise ValueError(f"optimizer {spec.name!r} registered twice")
    unknown = set(spec.space) - set(spec.defaults) - set(DECOUPLED_LR)
    if unknown:
        raise ValueError(f"{spec.name}: tuned hyperparameters without default: {unknown}")
    decoupled = set(spec.space) & set(DECOUPLED_LR)
    if decoupled and ("lr" in spec.space or len(decoupled) > 1 or not {"lr", "eps"} <= set(spec.defaults)):
        raise ValueError(f"{spec.name}: a decoupled coordinate {sorted(decoupled)} replaces lr and needs eps")
    OPTIMIZERS[spec.name] = spec
    return spec


def get(name: str) -> OptimizerSpec:
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise StudyError(f"unknown optimizer {name!r}; {did_you_mean(name, OPTIMIZERS)}") from None


def _reg(name: str, label: str, defaults: Mapping[str, float], space: Mapping[str, Dist]) -> None:
    register(OptimizerSpec(name, label, dict(defaults), dict(space)))


ADAM_LIKE = {"lr": LR, "beta1": BETA1, "beta2": BETA2}
BOUND_DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "final_lr": 0.1, "gamma": 1e-3}
BOUND_SPACE = {**ADAM_LIKE, "final_lr": FINAL_LR, "gamma": GAMMA}

# --- Crowded Valley (spec §1.2): one-shot defaults and tuned hyperparameters
_reg("amsbound", "AMSBound", BOUND_DEFAULTS, BOUND_SPACE)
_reg("amsgrad", "AMSGrad", {"lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, ADAM_LIKE)
_reg("adabelief", "AdaBelief", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-14}, ADAM_LIKE)
_reg("adabound", "AdaBound", BOUND_DEFAULTS, BOUND_SPACE)
_reg("adadelta", "AdaDelta", {"lr": 1e-3, "rho": 0.95, "eps": 1e-8}, {"lr": LR, "rho": ONE_MINUS})
_reg("adagrad", "AdaGrad", {"lr": 1e-2, "initial_accumulator_value": 0.1}, {"lr": LR})
_reg("adam", "Adam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}, ADAM_LIKE)
_reg("lookahead_momentum", "Lookahead(Momentum)", {"lr": 1e-2, "momentum": 0.99, "alpha": 0.5, "k": 5},
     {"lr": LR, "momentum": ONE_MINUS, "alpha": LA_ALPHA, "k": LA_K})
_reg("lookahead_radam", "Lookahead(RAdam)",
     {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "alpha": 0.5, "k": 5},
     {**ADAM_LIKE, "alpha": LA_ALPHA, "k": LA_K})
_reg("momentum", "Momentum", {"lr": 1e-2, "momentum": 0.99}, {"lr": LR, "momentum": ONE_MINUS})
_reg("nag", "NAG", {"lr": 1e-2, "momentum": 0.99}, {"lr": LR, "momentum": ONE_MINUS})
_reg("nadam", "NAdam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}, ADAM_LIKE)
_reg("radam", "RAdam", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7}, ADAM_LIKE)
_reg("rmsprop", "RMSProp", {"lr": 1e-3, "rho": 0.9, "eps": 1e-10, "momentum": 0.0}, {"lr": LR, "rho": ONE_MINUS})
_reg("sgd", "SGD", {"lr": 1e-2}, {"lr": LR})

#: the 15 optimizers of Crowded Valley, in the paper's order
CROWDED_VALLEY = ("amsbound", "amsgrad", "adabelief", "adabound", "adadelta", "adagrad", "adam",
                  "lookahead_momentum", "lookahead_radam", "momentum", "nag", "nadam", "radam", "rmsprop", "sgd")

# --- Choi et al. (spec §2): the same update rules, every hyperparameter tuned (ε included).
# Defaults (one-shot) are TF1's / common values: optbench's choice, see docs/optimizers.md.
_reg("choi_sgd", "SGD (Choi)", {"lr": 1e-2}, {"lr": CHOI_LR_SGD})
_reg("choi_momentum", "Momentum (Choi)", {"lr": 1e-2, "momentum": 0.9},
     {"lr": CHOI_LR_SGD, "momentum": CHOI_MOMENTUM})
_reg("choi_nesterov", "Nesterov (Choi)", {"lr": 1e-2, "momentum": 0.9},
     {"lr": CHOI_LR_SGD, "momentum": CHOI_MOMENTUM})
_reg("choi_rmsprop", "RMSProp (Choi)", {"lr": 1e-3, "rho": 0.9, "eps": 1e-10, "momentum": 0.0},
     {"lr": CHOI_LR_ADAPTIVE, "rho": CHOI_RHO, "momentum": CHOI_MOMENTUM, "eps": CHOI_EPS})
_reg("choi_adam", "Adam (Choi)", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
     {"lr": CHOI_LR_ADAPTIVE, "beta1": CHOI_BETA1, "beta2": CHOI_BETA2, "eps": CHOI_EPS})
_reg("choi_nadam", "NAdam (Choi)", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
     {"lr": CHOI_LR_ADAPTIVE, "beta1": CHOI_BETA1, "beta2": CHOI_BETA2, "eps": CHOI_EPS})

#: Choi et al.'s six optimizers
CHOI = ("choi_sgd", "choi_momentum", "choi_nesterov", "choi_rmsprop", "choi_adam", "choi_nadam")
