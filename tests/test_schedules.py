"""Learning-rate schedules against the check values of spec §1.3 and their formulas."""
from __future__ import annotations

import math

import numpy as np
import pytest

from optbench import schedules
from optbench.errors import StudyError


def test_constant():
    f = schedules.lr_factors("none", 100)
    assert f.shape == (101,)
    assert np.all(f == 1.0)


def test_cosine_values():
    n = 100
    f = schedules.lr_factors("cosine", n)
    assert f.shape == (n + 1,)
    assert f[0] == 1.0
    assert f[n] == pytest.approx(0.0, abs=1e-15)
    assert f[n // 2] == pytest.approx(0.5)
    e = np.arange(n + 1)
    np.testing.assert_allclose(f, 0.5 * (1 + np.cos(np.pi * e / n)), rtol=0, atol=1e-15)
    assert np.all(np.diff(f) <= 0)
    assert schedules.lr_factors("cosine", 7)[7] == pytest.approx(0.0, abs=1e-15)


def test_cosine_warm_restarts_check_values():
    f = schedules.lr_factors("cosine_wr", 100)
    assert f.shape == (101,)
    assert f[9] == pytest.approx(0.02447, abs=5e-6)
    assert f[10] == 1.0
    assert f[29] == pytest.approx(0.00616, abs=5e-6)
    assert f[100] == pytest.approx(0.69134, abs=5e-6)


def test_cosine_warm_restarts_cycles_do_not_scale_with_n():
    for n in (50, 100, 350):
        f = schedules.lr_factors("cosine_wr", n)
        restarts = [e for e in range(n + 1) if f[e] == 1.0]
        assert restarts == [s for s in (0, 10, 30, 70, 150, 310) if s <= n]
        # inside the cycle starting at 30 (length 40)
        for e in range(30, min(n, 69) + 1):
            assert f[e] == pytest.approx(0.5 * (1 + math.cos(math.pi * (e - 30) / 40)))


def test_trapezoidal_check_values():
    f = schedules.lr_factors("ltr", 100)
    assert f.shape == (101,)
    assert f[0] == 1.0  # epoch 0 runs at factor 1 (released lists start at epoch 1)
    np.testing.assert_allclose(f[1:10], np.arange(1, 10) / 10)  # 0.1 … 0.9
    assert np.all(f[10:91] == 1.0)  # 1.0 for epochs 10–90
    np.testing.assert_allclose(f[91:101], np.arange(10, 0, -1) / 11)  # 10/11 … 1/11
    assert f[100] == pytest.approx(1 / 11)  # last factor 1/(W+1), not 0


def test_trapezoidal_other_lengths():
    f = schedules.lr_factors("ltr", 350)  # W = 35
    assert f[35] == 1.0 and f[34] == pytest.approx(34 / 35)
    assert f[315] == 1.0 and f[316] == pytest.approx(1 - 1 / 36)
    assert f[350] == pytest.approx(1 / 36)


def test_linear_decay_formula():
    total = 1000
    for factor, alpha in ((1.0, 0.0), (0.7, 0.01), (0.5, 0.3)):
        T = factor * total
        for t in (0, 1, 250, int(T) - 1, int(T), int(T) + 5, total):
            want = 1 - (1 - alpha) * min(t, T) / T
            assert schedules.linear_decay(t, total, decay_steps_factor=factor, end_factor=alpha) == pytest.approx(want)
        assert schedules.linear_decay(total, total, decay_steps_factor=factor, end_factor=alpha) == pytest.approx(alpha)
    assert schedules.linear_decay(0, total) == 1.0


def test_warmup_cosine_formula():
    total, frac = 200, 0.1
    w = 20
    for t in range(total + 1):
        got = schedules.warmup_cosine(t, total, warmup_fraction=frac)
        want = (t + 1) / w if t < w else 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w)))
        assert got == pytest.approx(want, abs=1e-15)
    assert schedules.warmup_cosine(w - 1, total, frac) == 1.0
    assert schedules.warmup_cosine(total, total, frac) == pytest.approx(0.0, abs=1e-15)
    assert schedules.warmup_cosine(0, total, 0.0) == 1.0  # no warm-up: cosine from the start


def test_step_factor_fn_epoch_schedules_change_at_epoch_boundaries():
    fn = schedules.step_factor_fn("cosine_wr", 100, 7, {})
    f = schedules.lr_factors("cosine_wr", 100)
    for step in range(0, 100 * 7, 3):
        assert fn(step) == f[step // 7]
    assert fn(100 * 7 + 50) == f[100]


def test_step_factor_fn_step_schedules_take_their_arguments():
    fn = schedules.step_factor_fn("linear_decay", 10, 10, {"decay_steps_factor": 0.5, "end_factor": 0.1, "lr": 1.0})
    assert fn(0) == 1.0
    assert fn(25) == pytest.approx(1 - 0.9 * 0.5)
    assert fn(50) == pytest.approx(0.1) and fn(99) == pytest.approx(0.1)
    fn = schedules.step_factor_fn("warmup_cosine", 10, 10, {})
    assert fn(9) == 1.0 and fn(100) == pytest.approx(0.0, abs=1e-15)


def test_unknown_schedules():
    with pytest.raises(StudyError):
        schedules.check("cosine_warm")
    with pytest.raises(StudyError):
        schedules.lr_factors("linear_decay", 10)


def test_trapezoidal_warmup_length_rounds_half_up():
    for n, w in ((25, 3), (35, 4), (15, 2), (14, 1), (5, 1), (1, 1)):
        f = schedules.lr_factors("ltr", n)
        assert f[w] == 1.0 and (w == 1 or f[w - 1] == pytest.approx((w - 1) / w)), n
        if n > 2 * w:
            assert f[n] == pytest.approx(1 / (w + 1)), n
