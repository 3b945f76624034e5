"""The built-in manifolds against independent solvers (scipy) and closed forms."""

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodyn.manifolds import CircleLift, LpSphere, NormBall, Stiefel, default_atol

F64 = torch.float64
SHAPES = st.tuples(st.integers(1, 6), st.integers(1, 6))
SEEDS = st.integers(0, 2**31 - 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(shape=SHAPES, seed=SEEDS)
def test_stiefel_project_is_scipy_polar_factor(shape, seed):
    x = torch.randn(shape, dtype=F64, generator=_gen(seed))
    y = Stiefel().project(x)
    if shape[0] >= shape[1]:
        expected, _ = scipy.linalg.polar(x.numpy(), side="right")
    else:
        expected, _ = scipy.linalg.polar(x.numpy(), side="left")
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-10)


@settings(max_examples=30)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
    retraction=st.sampled_from(["qr", "polar", "cayley", "exp"]),
    step=st.floats(0.0, 2.0),
    seed=SEEDS,
)
def test_every_stiefel_retraction_lands_on_the_manifold(shape, retraction, step, seed):
    m = Stiefel(retraction)
    g = _gen(seed)
    x = m.random_point(*shape, dtype=F64, generator=g)
    v = step * m.random_tangent(x, generator=g)
    y = m.retract(x, v)
    assert float(m.residual(y)) < 1e-12
    torch.testing.assert_close(m.retract(x, torch.zeros_like(v)), x, atol=1e-13, rtol=0)


def test_stiefel_exp_is_the_embedded_geodesic():
    """Closed form of Edelman, Arias and Smith, evaluated with scipy.linalg.expm."""
    m = Stiefel("exp")
    g = _gen(3)
    x = m.random_point(7, 3, dtype=F64, generator=g)
    v = 0.7 * m.random_tangent(x, generator=g)
    xn, vn = x.numpy(), v.numpy()
    a, s = xn.T @ vn, vn.T @ vn
    block = np.block([[a, -s], [np.eye(3), a]])
    expected = np.hstack([xn, vn]) @ scipy.linalg.expm(block)[:, :3] @ scipy.linalg.expm(-a)
    np.testing.assert_allclose(m.retract(x, v).numpy(), expected, atol=1e-12)


def _shake_and_direct_solve(n, p, h, seed):
    """Stiefel.shake(X, X + h V) and Y + X Lambda with symmetric Lambda from
    scipy.optimize.root started at Lambda = 0 (tall frames)."""
    m = Stiefel()
    g = _gen(seed)
    x = m.random_point(n, p, dtype=F64, generator=g)
    y = x + h * m.random_tangent(x, generator=g)
    wide = n < p
    xt, yt = (x.numpy().T, y.numpy().T) if wide else (x.numpy(), y.numpy())
    k = xt.shape[1]
    iu = np.triu_indices(k)

    def residual(params):
        lam = np.zeros((k, k))
        lam[iu] = params
        lam = lam + np.triu(lam, 1).T
        z = yt + xt @ lam
        return (z.T @ z - np.eye(k))[iu]

    sol = scipy.optimize.root(residual, np.zeros(len(iu[0])), tol=1e-14)
    assert np.abs(residual(sol.x)).max() < 1e-13
    lam = np.zeros((k, k))
    lam[iu] = sol.x
    lam = lam + np.triu(lam, 1).T
    got = m.shake(x, y).numpy()
    return (got.T if wide else got), yt + xt @ lam


@pytest.mark.parametrize(("n", "p", "h"), [(6, 3, 0.05), (5, 5, 0.2), (3, 7, 0.1), (8, 2, 0.4)])
def test_stiefel_shake_matches_a_direct_solve(n, p, h):
    got, expected = _shake_and_direct_solve(n, p, h, n * 10 + p)
    np.testing.assert_allclose(got, expected, atol=1e-11)


@pytest.mark.parametrize(("h", "newton_steps"), [(0.02, False), (0.1, True)])
def test_stiefel_shake_takes_chord_steps_near_x_and_newton_steps_far(monkeypatch, h, newton_steps):
    """Near X the chord step (matrix products only) reaches the root; far from X, where it
    contracts too slowly, Newton's steps (an eigendecomposition each) take over. Both
    land on the root a direct solve finds."""
    calls = []
    eigh = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: calls.append(a.shape) or eigh(a))
    got, expected = _shake_and_direct_solve(12, 4, h, 7)
    np.testing.assert_allclose(got, expected, atol=1e-11)
    assert bool(calls) == newton_steps


def _nearest_by_slsqp(x, constraint, starts):
    """The best of several SLSQP runs of min |y - x|^2 under ``constraint``."""
    best = None
    for y0 in starts:
        res = scipy.optimize.minimize(
            lambda y: np.sum((y - x) ** 2),
            y0,
            jac=lambda y: 2 * (y - x),
            method="SLSQP",
            constraints=[constraint],
            options={"ftol": 1e-14, "maxiter": 200},
        )
        c = constraint["fun"](res.x)
        # SLSQP can stop on the boundary of an inequality a few 1e-9 outside it
        feasible = abs(c) < 1e-10 if constraint["type"] == "eq" else c > -1e-8
        if feasible and (best is None or res.fun < best.fun):
            best = res
    assert best is not None
    return best


@pytest.mark.parametrize("p", [1.1, 1.5, 3.0, 4.0])
@pytest.mark.parametrize("scale", [0.3, 3.0])  # mostly inside, mostly outside
def test_lp_sphere_project_is_the_nearest_point(p, scale):
    r = 1.3
    m = LpSphere(p, radius=r)
    x = scale * torch.randn(6, 4, dtype=F64, generator=_gen(int(10 * p)))
    y = m.project(x)
    assert float(m.residual(y)) < 1e-13
    rng = np.random.default_rng(0)

    def on_sphere(z):
        return z * r / np.sum(np.abs(z) ** p) ** (1 / p)

    cons = {"type": "eq", "fun": lambda z: np.sum(np.abs(z) ** p) / r**p - 1}
    for xi, yi in zip(x.numpy(), y.numpy(), strict=True):
        starts = [on_sphere(xi)] + [on_sphere(rng.standard_normal(4)) for _ in range(4)]
        best = _nearest_by_slsqp(xi, cons, starts)
        ours = np.linalg.norm(yi - xi)
        # ours is no farther than any local minimum scipy finds (to solver accuracy)
        assert ours <= np.sqrt(best.fun) + 1e-7
        if abs(ours - np.sqrt(best.fun)) < 1e-9:
            np.testing.assert_allclose(yi, best.x, atol=1e-5)


def test_norm_ball_project_is_the_nearest_point():
    r = 0.8
    m = NormBall(r)
    x = torch.randn(12, 3, dtype=F64, generator=_gen(5))
    y = m.project(x)
    cons = {"type": "ineq", "fun": lambda z: r**2 - np.sum(z**2)}
    for xi, yi in zip(x.numpy(), y.numpy(), strict=True):
        best = _nearest_by_slsqp(xi, cons, [np.zeros(3)])
        np.testing.assert_allclose(yi, best.x, atol=1e-6)


@pytest.mark.parametrize("p", [1.1, 2.0, 4.0])
def test_lp_sphere_shake_matches_a_scalar_root(p):
    m = LpSphere(p)
    g = _gen(7)
    x = m.random_point(5, 6, dtype=F64, generator=g)
    y = x + 0.1 * m.random_tangent(x, generator=g)
    n = m.normal(x).numpy()
    got = m.shake(x, y).numpy()
    for yi, ni, gi in zip(y.numpy(), n, got, strict=True):
        mu = scipy.optimize.brentq(
            lambda t, y0=yi, n0=ni: np.sum(np.abs(y0 + t * n0) ** p) - 1, -0.2, 0.2
        )
        np.testing.assert_allclose(gi, yi + mu * ni, atol=1e-12)


@given(q=st.floats(-0.3, 0.3), velocity=st.floats(-5.0, 5.0), h=st.floats(0.0, 3.0))
def test_circle_lift_drift_is_the_exact_rotation(q, velocity, h):
    r = 0.3
    m = CircleLift(r)
    z = m.lift(torch.tensor([q], dtype=F64))
    tangent = torch.stack([-z[..., 1], z[..., 0]], dim=-1) / r  # unit tangent
    v = velocity * tangent
    angle = h * velocity / r
    rot = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=F64)
    y, w = m.retr_transp(z, h * v, v)
    torch.testing.assert_close(y, z @ rot.T, atol=1e-13, rtol=0)
    torch.testing.assert_close(w, v @ rot.T, atol=1e-12, rtol=0)
    assert float(m.residual(y)) <= default_atol(F64)
    torch.testing.assert_close(m.weight(m.lift(z[..., 0])), z[..., 0])
