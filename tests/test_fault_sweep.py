"""Fault sweep: every manifold verb and every integrator under extreme input.

The property, for every example: either a correct result (finite, and on M within the
dtype's tolerance) or a clear exception (ValueError, ConvergenceError, NonFiniteError)
whose message names the offending argument; after an integrator raises, parameters and
optimizer state are exactly as before. Each test records, as user properties, how many
examples it ran (``fault_examples``), how many extreme inputs it injected
(``faults_injected``), and how many non-finite values were committed
(``nan_committed``) or results left M without an exception (``silent_violations``);
either of the last two fails the test.

``GEODYN_FAULT_SWEEP_LONG=1`` runs the long mode: every test draws ``LONG_FACTOR``
times the examples (``GEODYN_FAULT_SWEEP_FACTOR``, default 28), and the integrator
matrix adds ABOBA and the base optimizers AdamW, RMSprop (centered) and Adagrad, over
10^5 examples in all at the default factor.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

import geodyn
from geodyn import (
    CircleLift,
    ConvergenceError,
    Euclidean,
    Implicit,
    LpSphere,
    Manifold,
    NonFiniteError,
    NormBall,
    Oblique,
    Product,
    Sphere,
    Stiefel,
)
from geodyn.manifolds import default_atol

FAULTS = (ValueError, ConvergenceError, NonFiniteError)
LONG = os.environ.get("GEODYN_FAULT_SWEEP_LONG") == "1"
LONG_FACTOR = int(os.environ.get("GEODYN_FAULT_SWEEP_FACTOR", "28"))
"""Examples per test in the long mode, relative to the default sweep (28: over 10^5 in all)."""

TALLY: Counter[str] = Counter()
"""Counts of the running test: faults injected, NaN committed, silent violations."""


def sweep(max_examples: int) -> settings:
    """The profile's settings (derandomized in "ci") with ``max_examples`` per test."""
    return settings(
        max_examples=max_examples * (LONG_FACTOR if LONG else 1),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def unit_norm_zero_mean(x: Tensor) -> Tensor:
    """Two constraints on R^4: |x|^2 = 1 and sum(x) = 0."""
    return torch.stack([(x * x).sum() - 1, x.sum()])


MANIFOLDS: dict[str, tuple[Manifold, tuple[int, ...]]] = {
    "euclidean": (Euclidean(), (3,)),
    "sphere": (Sphere(), (4,)),
    "oblique_columns": (Oblique(dim=-2), (3, 2)),
    **{f"stiefel_{r}": (Stiefel(r), (4, 2)) for r in ("qr", "polar", "cayley", "exp")},
    "stiefel_wide": (Stiefel(), (2, 4)),
    **{f"lp_{p}": (LpSphere(p), (4,)) for p in (1.1, 1.5, 3.0, 8.0)},
    "norm_ball": (NormBall(), (3,)),
    "circle_lift": (CircleLift(), (3, 2)),
    "product": (Product((Sphere(), (3,)), (Stiefel(), (3, 2)), (NormBall(), (2,))), (11,)),
    "implicit": (Implicit(unit_norm_zero_mean, n=4, name="unit_norm_zero_mean"), (4,)),
}
NAMES = sorted(MANIFOLDS)
DTYPES = (torch.float32, torch.float64)
SCALES = (1e-30, 1e-6, 1.0, 1e6, 1e30)
OFFSETS = (0.0, 1e-6, 1e-3)
TANGENT_SCALES = (0.0, 1e-30, 1.0, 1e6, 1e30)


def names_argument(err: Exception, *names: str) -> bool:
    """Whether the message of ``err`` names one of ``names`` as a word."""
    return re.search(rf"\b({'|'.join(map(re.escape, names))})\b", str(err)) is not None


def attempt(fn: Callable[[], Tensor], *names: str) -> Tensor | None:
    """fn(), or None after a clear exception (one of FAULTS naming one of ``names``)."""
    try:
        return fn()
    except FAULTS as err:
        assert names_argument(err, *names), f"{type(err).__name__} names none of {names}: {err}"
        return None


def assert_on(manifold: Manifold, z: Tensor, like: Tensor, what: str) -> None:
    assert z.shape == like.shape and z.dtype == like.dtype, what
    ok, reason = manifold.check_point(z)
    if not ok:
        TALLY["nan_committed" if not bool(torch.isfinite(z).all()) else "silent_violations"] += 1
    assert ok, f"{what}: {reason}"


def record_tally(record_property: Callable[[str, object], None], examples: int) -> None:
    """Record the test's example count and tally as user properties (summed by conftest)."""
    record_property("fault_examples", examples)
    for key in ("faults_injected", "nan_committed", "silent_violations"):
        record_property(key, TALLY[key])
    TALLY.clear()


def ambient(shape: tuple[int, ...], kind: str, dtype: torch.dtype, g: torch.Generator) -> Tensor:
    """A Gaussian tensor, a nearly rank-deficient one (condition 1e7), or zero."""
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    if kind == "ill":
        if len(shape) >= 2:
            u, s, vh = torch.linalg.svd(x, full_matrices=False)
            s = torch.logspace(0, -7, s.shape[-1], dtype=torch.float64)
            x = u @ (s.unsqueeze(-1) * vh)
        else:
            x = x * torch.logspace(0, -7, shape[-1], dtype=torch.float64)
    elif kind == "zero":
        x = torch.zeros_like(x)
    return x.to(dtype)


def on_point(
    manifold: Manifold, shape: tuple[int, ...], dtype: torch.dtype, g: torch.Generator
) -> Tensor:
    return manifold.random_point(*shape, dtype=torch.float64, generator=g).to(dtype)


# ------------------------------------------------------------------------ manifold verbs
@pytest.mark.parametrize("name", NAMES)
def test_project_and_check_point_under_extreme_input(name: str, record_property: Any) -> None:
    manifold, shape = MANIFOLDS[name]
    count = 0

    @sweep(30)
    @given(
        dtype=st.sampled_from(DTYPES),
        scale=st.sampled_from(SCALES),
        kind=st.sampled_from(("gaussian", "ill", "zero")),
        offset=st.sampled_from(OFFSETS),
        seed=st.integers(0, 2**16),
    )
    def run(dtype: torch.dtype, scale: float, kind: str, offset: float, seed: int) -> None:
        nonlocal count
        count += 1
        g = torch.Generator().manual_seed(seed)
        x = ambient((2, *shape), kind, torch.float64, g).mul(scale).to(dtype)
        # extreme x, a point off M, and a NaN entry
        TALLY["faults_injected"] += int(scale != 1.0 or kind != "gaussian") + int(offset > 0) + 1
        z = attempt(lambda: manifold.project(x), "x")
        if z is not None:
            assert_on(manifold, z, x, f"project of |x| ~ {scale:g}, {kind}")
            if manifold.is_inequality and scale >= 1e6 and kind != "zero":
                boundary = float(manifold.constraint(z).abs().max())  # outside: onto the sphere
                assert boundary <= default_atol(dtype), f"project of |x| ~ {scale:g}: {boundary}"
        # check_point never raises, and tells points slightly off M from points on M
        x0 = on_point(manifold, (2, *shape), dtype, g)
        off = x0 + offset * ambient(x0.shape, "gaussian", dtype, g)
        ok, reason = manifold.check_point(off)
        residual = float(manifold.residual(off))
        assert ok == (residual <= default_atol(dtype)), (ok, residual, reason)
        assert ok or (reason and "x" in reason)
        bad = x0.clone()
        bad[(0,) * bad.dim()] = float("nan")  # the first entry, in any layout
        ok, reason = manifold.check_point(bad)
        assert not ok and reason

    TALLY.clear()
    run()
    record_tally(record_property, count)


@pytest.mark.parametrize("name", NAMES)
def test_tangent_verbs_retract_and_shake_under_extreme_steps(
    name: str, record_property: Any
) -> None:
    manifold, shape = MANIFOLDS[name]
    count = 0

    @sweep(40)
    @given(
        dtype=st.sampled_from(DTYPES),
        offset=st.sampled_from(OFFSETS),
        tscale=st.sampled_from(TANGENT_SCALES),
        seed=st.integers(0, 2**16),
    )
    def run(dtype: torch.dtype, offset: float, tscale: float, seed: int) -> None:
        nonlocal count
        count += 1
        g = torch.Generator().manual_seed(seed)
        x0 = on_point(manifold, (2, *shape), dtype, g)
        x = x0 + offset * ambient(x0.shape, "gaussian", dtype, g)
        raw = ambient(x.shape, "gaussian", dtype, g) * tscale
        TALLY["faults_injected"] += int(offset > 0) + int(tscale != 1.0)
        for verb in (manifold.proj_tangent, manifold.rattle):
            u = attempt(lambda verb=verb: verb(x, raw), "x", "v", "p")
            if u is None:
                continue
            if not bool(torch.isfinite(u).all()):
                TALLY["nan_committed"] += 1
            assert bool(torch.isfinite(u).all()), f"{verb.__name__} of |v| ~ {tscale:g}"
            if offset == 0:  # at a point of M the result is tangent: projecting again fixes it
                scale = max(1.0, float(u.abs().max()))
                again = manifold.proj_tangent(x, u)
                assert float((again - u).abs().max()) <= 100 * default_atol(dtype) * scale
        v = manifold.proj_tangent(x, ambient(x.shape, "gaussian", dtype, g)) * tscale
        z = attempt(lambda: manifold.retract(x, v), "x", "v")
        if z is not None and offset == 0:  # R_x(0) = x: only a point of M retracts onto M
            assert_on(manifold, z, x, f"retract, |v| ~ {tscale:g}")
        z = attempt(lambda: manifold.shake(x, x + v), "x", "y", "lr")
        if z is not None:
            assert_on(manifold, z, x, f"shake, |y - x| ~ {tscale:g}, x off M by {offset:g}")

    TALLY.clear()
    run()
    record_tally(record_property, count)


# ------------------------------------------------------------------------ integrators
F32 = torch.float32
OPTIMIZERS = ("rsgd", "baoab", "obabo", "overdamped", "adam", "sgd")
if LONG:
    OPTIMIZERS += ("aboba", "adamw", "rmsprop", "adagrad")
GRADIENTS = ("zero", "gaussian", "huge", "nan", "inf")
STEP_NAMES = ("gradient", "lr", "learning rate", "step size")


def make_optimizer(kind: str, p: Tensor, manifold: Manifold, lr: float) -> torch.optim.Optimizer:
    group = [{"params": [p], "manifold": manifold}]
    if kind == "rsgd":
        return geodyn.RiemannianSGD(group, lr=lr, momentum=0.9)
    if kind in ("baoab", "obabo", "aboba"):
        return geodyn.Splitting(group, lr=lr, gamma=1.0, tau=0.1, scheme=kind.upper(), seed=0)
    if kind == "overdamped":
        return geodyn.Overdamped(group, lr=lr, tau=0.1, seed=0)
    bases: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "adam": lambda: torch.optim.Adam(group, lr=lr),
        "sgd": lambda: torch.optim.SGD(group, lr=lr, momentum=0.9),
        "adamw": lambda: torch.optim.AdamW(group, lr=lr, weight_decay=0.01),
        "rmsprop": lambda: torch.optim.RMSprop(group, lr=lr, momentum=0.5, centered=True),
        "adagrad": lambda: torch.optim.Adagrad(group, lr=lr),
    }
    return geodyn.Constrained(bases[kind]())


def gradient(kind: str, like: Tensor, g: torch.Generator) -> Tensor:
    v = ambient(like.shape, "gaussian", like.dtype, g)
    if kind == "zero":
        return torch.zeros_like(like)
    if kind == "huge":
        return v * 1e30
    if kind in ("nan", "inf"):
        v.view(-1)[-1] = float(kind)
    return v


def snapshot(opt: torch.optim.Optimizer, p: Tensor) -> list[Any]:
    state = [(k, v.clone() if torch.is_tensor(v) else v) for k, v in opt.state[p].items()]
    generator = getattr(opt, "generator", None)
    noise = generator.get_state().clone() if generator is not None else None
    return [p.detach().clone(), sorted(state, key=lambda kv: kv[0]), noise]


def assert_unchanged(before: list[Any], after: list[Any]) -> None:
    assert torch.equal(before[0], after[0]), "parameter changed by a step that raised"
    assert [k for k, _ in before[1]] == [k for k, _ in after[1]], "state keys changed"
    for (key, a), (_, b) in zip(before[1], after[1], strict=True):
        same = torch.equal(a, b) if torch.is_tensor(a) else a == b
        assert same, f"state {key!r} changed by a step that raised"
    if before[2] is not None:
        assert torch.equal(before[2], after[2]), "noise generator advanced by a step that raised"


def checked_step(opt: torch.optim.Optimizer, p: Tensor, manifold: Manifold, grad: Tensor) -> bool:
    """One step: either on M with finite state, or a clear fault that changed nothing.

    Known (test_known_step_rollback_on_value_error): a plain ValueError raised by a
    manifold verb mid-step is not rolled back by the integrators.
    """
    p.grad = grad.clone()
    before = snapshot(opt, p)
    try:
        opt.step()
    except FAULTS as err:
        assert names_argument(err, *STEP_NAMES), f"{type(err).__name__}: {err}"
        if isinstance(err, (NonFiniteError, ConvergenceError)):
            assert_unchanged(before, snapshot(opt, p))
        return False
    assert_on(manifold, p.detach(), p, f"{type(opt).__name__} step")
    for key, value in opt.state[p].items():
        if torch.is_tensor(value) and not bool(torch.isfinite(value).all()):
            TALLY["nan_committed"] += 1
            raise AssertionError(f"state {key!r} is not finite")
    return True


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_integrators_under_faulty_gradients_and_huge_steps(
    kind: str, name: str, record_property: Any
) -> None:
    manifold, shape = MANIFOLDS[name]
    count = 0

    @sweep(20)
    @given(
        dtype=st.sampled_from(DTYPES),
        lr=st.sampled_from((1e-2, 1.0, 1e6)),
        grads=st.lists(st.sampled_from(GRADIENTS), min_size=2, max_size=2),
        seed=st.integers(0, 2**16),
    )
    def run(dtype: torch.dtype, lr: float, grads: list[str], seed: int) -> None:
        nonlocal count
        count += 1
        g = torch.Generator().manual_seed(seed)
        p = torch.nn.Parameter(on_point(manifold, (2, *shape), dtype, g))
        opt = make_optimizer(kind, p, manifold, lr)
        for grad in grads:
            TALLY["faults_injected"] += int(grad in ("huge", "nan", "inf") or lr > 1)
            checked_step(opt, p, manifold, gradient(grad, p, g))

    TALLY.clear()
    run()
    record_tally(record_property, count)


def test_norm_ball_shake_takes_the_root_nearest_zero_when_y_is_behind_x() -> None:
    # <x, y> < 0: the multiplier formula -d / (b + sqrt(disc)) would cancel
    x = torch.tensor([[0.6, 0.0]], dtype=F32)
    y = torch.tensor([[-3.0e3, 1.0e-2]], dtype=F32)
    z = NormBall().shake(x, y)
    assert_on(NormBall(), z, x, "shake of a point behind x")
    # roots: 0.6 lam = 3e3 -+ 0.99995; the one nearest zero keeps y's side, z_1 ~ -1
    assert float(z[0, 0]) < 0


# ------------------------------------------------------------------ regressions
# Minimal cases of faults the sweep found: overflow in a norm, a NaN discriminant, a
# retraction leaving M for a huge step, a non-finite base state, a step not rolled back.


def test_regression_sphere_project_overflows() -> None:
    x = torch.full((4,), 1e30, dtype=F32)
    ok, reason = Sphere().check_point(Sphere().project(x))
    assert ok, reason


def test_regression_sphere_retract_overflows() -> None:
    x = torch.tensor([1.0, 0.0, 0.0], dtype=F32)
    z = Sphere().retract(x, torch.tensor([0.0, 1e30, 0.0], dtype=F32))
    ok, reason = Sphere().check_point(z)
    assert ok, reason


def test_regression_sphere_shake_nan() -> None:
    x = torch.tensor([1.0, 0.0, 0.0], dtype=F32)
    with pytest.raises(ConvergenceError, match="lr"):
        Sphere().shake(x, torch.tensor([1e30, 1e30, 0.0], dtype=F32))


def test_regression_stiefel_exp_retract_leaves_manifold() -> None:
    m = Stiefel("exp")
    x = torch.eye(4, 2, dtype=torch.float64)
    v = torch.zeros(4, 2, dtype=torch.float64)
    v[2, 0] = v[3, 1] = 1e6
    z = attempt(lambda: m.retract(x, v), "v", "lr")
    assert z is None or m.check_point(z)[0]


def test_regression_stiefel_cayley_retract_nan() -> None:
    m = Stiefel("cayley")
    g = torch.Generator().manual_seed(0)
    x = m.random_point(4, 2, generator=g)
    v = m.proj_tangent(x, torch.randn(4, 2, generator=g)) * 1e30
    z = attempt(lambda: m.retract(x, v), "v", "lr")
    assert z is None or m.check_point(z)[0]


def test_regression_stiefel_polar_retract_nan() -> None:
    m = Stiefel("polar")
    x = torch.eye(4, 2, dtype=F32)
    v = torch.zeros(4, 2, dtype=F32)
    v[2, 0] = v[3, 1] = 1e30
    z = attempt(lambda: m.retract(x, v), "v", "lr")
    assert z is None or m.check_point(z)[0]


def test_regression_adam_state_overflow() -> None:
    p = torch.nn.Parameter(torch.tensor([[1.0, 0.0, 0.0]], dtype=F32))
    opt = geodyn.Constrained(torch.optim.Adam([{"params": [p], "manifold": Sphere()}], lr=0.1))
    p.grad = torch.tensor([[0.0, 1e30, 0.0]], dtype=F32)
    try:
        opt.step()
    except NonFiniteError:
        return
    assert all(bool(torch.isfinite(v).all()) for v in opt.state[p].values())


def test_regression_step_rollback_on_value_error() -> None:
    manifold = MANIFOLDS["implicit"][0]
    x = manifold.random_point(1, 4, dtype=torch.float64, generator=torch.Generator())
    p = torch.nn.Parameter(x.clone())
    opt = geodyn.Constrained(torch.optim.SGD([{"params": [p], "manifold": manifold}], lr=1e6))
    p.grad = torch.full_like(x, 1e300) * torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=x.dtype)
    with pytest.raises(ValueError):
        opt.step()
    assert torch.equal(p.detach(), x)


def test_regression_circle_lift_accepts_odd_storage_offsets() -> None:
    # a gradient-bucket view can start at an odd offset: no complex view of it exists
    m = CircleLift()
    x = m.lift(torch.linspace(-0.5, 0.5, 5, dtype=torch.float64))
    g = torch.randn(11, dtype=torch.float64)[1:].view(5, 2)
    torch.testing.assert_close(m.proj_tangent(x, g), m.proj_tangent(x, g.clone()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_regression_circle_lift_keeps_half_dtypes(dtype: torch.dtype) -> None:
    m = CircleLift()
    x = m.lift(torch.linspace(-0.5, 0.5, 5)).to(dtype)
    v = m.proj_tangent(x, torch.randn(5, 2).to(dtype))
    assert v.dtype == dtype
    assert m.retract(x, v).dtype == dtype
    assert all(t.dtype == dtype for t in m.retr_transp(x, v, v))


def test_regression_sphere_retract_is_differentiable() -> None:
    x = Sphere().random_point(3, 4, dtype=torch.float64)
    v = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    Sphere().retract(x, v).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
