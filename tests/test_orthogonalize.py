"""Newton-Schulz polar factor and msign, measured against the SVD and scipy's polar factor."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings

from geodyn.integrators._workspace import Workspace
from geodyn.manifolds import ConvergenceError, Stiefel, msign, polar_newton_schulz
from geodyn.manifolds._tol import solver_tol
from geodyn.manifolds.orthogonalize import COEFFICIENTS


def _svd_polar(y: torch.Tensor) -> torch.Tensor:
    u, _, vh = torch.linalg.svd(y.to(torch.float64), full_matrices=False)
    return u @ vh


def _retraction_start(dtype, step, n=64, p=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    manifold = Stiefel()
    x = manifold.random_point(n, p, dtype=dtype, generator=gen)
    v = manifold.random_tangent(x, generator=gen)
    return x, x + v * (step / v.norm())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("step", [0.1, 0.3, 3.0])
def test_polar_newton_schulz_is_the_svd_polar_factor(dtype, step):
    _, y = _retraction_start(dtype, step)
    x = polar_newton_schulz(y)
    eps = torch.finfo(dtype).eps
    assert float((x.double() - _svd_polar(y)).abs().max()) < 64 * eps
    assert float(Stiefel().residual(x)) < 1e-6 if dtype == torch.float32 else 1e-13


@pytest.mark.parametrize("step", [0.1, 3.0])
def test_polar_newton_schulz_in_kept_scratch_changes_no_bit(step):
    """With a scratch that keeps its tensors (the result in one of them), the iterates
    are those allocated afresh, bit for bit, and a second call reuses the memory."""
    _, y = _retraction_start(torch.float64, step)
    work = Workspace()
    scratch = work.scratch("polar")
    expected = polar_newton_schulz(y)
    first = polar_newton_schulz(y, scratch=scratch).clone()
    pointers = {key: t.data_ptr() for key, t in work.kept().items()}
    assert torch.equal(first, expected)
    assert torch.equal(polar_newton_schulz(y, scratch=scratch), expected)
    assert {key: t.data_ptr() for key, t in work.kept().items()} == pointers
    assert ("polar", "iterate") in pointers


def test_newton_schulz_retraction_differentiates_as_the_svd_polar_factor():
    """Backpropagation through the iteration (which then takes no scratch and updates
    nothing autograd saved) gives the derivative of the polar factor, by the SVD."""
    gen = torch.Generator().manual_seed(3)
    manifold = Stiefel("newton-schulz")
    x = manifold.random_point(9, 4, dtype=torch.float64, generator=gen)
    v = 0.1 * manifold.proj_tangent(x, torch.randn(9, 4, dtype=torch.float64, generator=gen))
    w = torch.randn(9, 4, dtype=torch.float64, generator=gen)
    grads = []
    for polar in (lambda y: manifold.retract(x, y - x), _svd_polar):
        y = (x + v).requires_grad_(True)
        (polar(y) * w).sum().backward()
        grads.append(y.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


def test_polar_newton_schulz_complex_in_kept_scratch():
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(9, 4, dtype=torch.complex128, generator=gen)
    work = Workspace()
    assert torch.equal(polar_newton_schulz(y, scratch=work.scratch("polar")),
                       polar_newton_schulz(y))
    assert not work.kept()["polar", "|gram|"].is_complex()


def test_polar_newton_schulz_under_vmap_is_the_polar_factor():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(3, 9, 4, dtype=torch.float64, generator=gen)
    x = torch.func.vmap(polar_newton_schulz)(y)
    for xi, yi in zip(x, y, strict=True):
        u, _ = scipy.linalg.polar(yi.numpy())
        assert float((xi - torch.from_numpy(u)).abs().max()) < 1e-13


def test_polar_newton_schulz_matches_scipy_on_a_general_start():
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    u, _ = scipy.linalg.polar(y.numpy())
    assert float((polar_newton_schulz(y) - torch.from_numpy(u)).abs().max()) < 1e-13
    wide = y.mT.contiguous()
    assert float((polar_newton_schulz(wide) - torch.from_numpy(u).mT).abs().max()) < 1e-13


def test_polar_newton_schulz_converges_quadratically():
    # eigenvalue-wise e' = -3/4 e^2 + 1/4 e^3 for E = X^T X - I: the float64 floor in 3 steps
    _, y = _retraction_start(torch.float64, 0.3)
    eye = torch.eye(16, dtype=torch.float64)
    errs = []
    x = y
    for _ in range(4):
        e = x.mT @ x - eye
        errs.append(float(torch.linalg.matrix_norm(e, ord=2)))
        x = x - 0.5 * x @ e
    for before, after in zip(errs[:2], errs[1:3], strict=True):
        assert after <= 0.75 * before**2 + 0.25 * before**3 + 1e-14
    assert errs[3] < 1e-14


def test_polar_newton_schulz_bfloat16_is_computed_in_float32():
    _, y = _retraction_start(torch.float32, 0.3)
    x = polar_newton_schulz(y.bfloat16())
    assert x.dtype == torch.bfloat16
    # one rounding to bfloat16 of the float32 polar factor
    assert float((x.double() - _svd_polar(y)).abs().max()) <= 2 ** -8


def test_polar_newton_schulz_raises_on_rank_deficient_input():
    y = torch.zeros(5, 3, dtype=torch.float64)
    y[:, :2] = torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(ConvergenceError, match="rank-deficient"):
        polar_newton_schulz(y)
    with pytest.raises(ConvergenceError):
        polar_newton_schulz(torch.full((4, 2), float("nan")))


def test_polar_newton_schulz_bad_arguments():
    with pytest.raises(ValueError, match="maxiter"):
        polar_newton_schulz(torch.eye(3), maxiter=0)
    with pytest.raises(ValueError, match="shape"):
        polar_newton_schulz(torch.ones(3))


def test_stiefel_newton_schulz_retraction_equals_polar():
    manifold = Stiefel("newton-schulz")
    x, y = _retraction_start(torch.float64, 0.3)
    v = y - x
    assert float((manifold.retract(x, v) - Stiefel("polar").retract(x, v)).abs().max()) < 1e-13
    wide = manifold.retract(x.mT, v.mT)
    assert float((wide - Stiefel("polar").retract(x.mT, v.mT)).abs().max()) < 1e-13


def _scalar_map(s, coefficients, steps):
    a, b, c = coefficients
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return s


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (3, 32, 32)])
def test_msign_acts_on_singular_values_as_the_quintic(shape):
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(shape, dtype=torch.float64, generator=gen)
    o = msign(g, "quintic", 5, dtype=None)
    u, s, vh = torch.linalg.svd(g, full_matrices=False)
    # U^H O V is diagonal: the singular vectors of G, each singular value through p^5
    inner = u.mT @ o @ vh.mT
    mapped = torch.diagonal(inner, dim1=-2, dim2=-1)
    assert float((inner - torch.diag_embed(mapped)).abs().max()) < 1e-12
    sn = s / g.norm(dim=(-2, -1), keepdim=True).squeeze(-1)
    expected = _scalar_map(sn, COEFFICIENTS["quintic"], 5)
    assert float((mapped - expected).abs().max()) < 1e-12
    # the documented range: [0.68, 1.14] for s / |G|_F >= 1e-2, never orthonormal
    kept = mapped[sn >= 1e-2]
    assert float(kept.min()) > 0.68 and float(kept.max()) < 1.14
    assert float((mapped - 1).abs().max()) > 0.05


def test_msign_cubic_converges_to_the_polar_factor_with_enough_steps():
    gen = torch.Generator().manual_seed(3)
    g = torch.randn(32, 8, dtype=torch.float64, generator=gen)
    o = msign(g, "cubic", 40, dtype=None)
    assert float((o - _svd_polar(g)).abs().max()) < 1e-12
    assert COEFFICIENTS["cubic"] == (1.5, -0.5, 0.0)


def test_msign_reproduces_torch_muon_newton_schulz():
    from torch.optim._muon import _zeropower_via_newtonschulz

    gen = torch.Generator().manual_seed(4)
    for shape in [(48, 20), (20, 48)]:
        g = torch.randn(shape, generator=gen)
        ref = _zeropower_via_newtonschulz(g, COEFFICIENTS["quintic"], 5, 1e-7)
        assert torch.equal(msign(g).to(ref.dtype), ref)


def test_msign_bad_arguments():
    with pytest.raises(ValueError, match="coefficients"):
        msign(torch.ones(3, 3), "septic")
    with pytest.raises(ValueError, match="steps"):
        msign(torch.ones(3, 3), steps=0)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((5, 3), torch.float64), ((2, 2, 4), torch.float32)],
    ids=["tall-float64", "wide-batch-float32"],
)
def test_stiefel_newton_schulz_obeys_every_law(shape, dtype):
    from geodyn.testing import check_manifold

    report = check_manifold(Stiefel("newton-schulz"), shape, dtype)
    assert report["worst"]["residual"] <= report["tolerance"]["residual"]
    assert report["worst"]["retract rate (min)"] >= 3.0


class _CountProducts(torch.overrides.TorchFunctionMode):
    """Counts the matrix products (``@``, ``matmul``) called inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.products = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__):
            self.products += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_polar_newton_schulz_skips_the_gram_its_bound_certifies(dtype):
    # a small retraction step: E_0 = V^T V; (3 e^2 + e^3)/4 <= tol/4 after one step, so the
    # Gram matrix of X + V and that step are the only products
    x, y = _retraction_start(dtype, 1e-2 if dtype == torch.float32 else 1e-5)
    with _CountProducts() as counter:
        out = polar_newton_schulz(y)
    assert counter.products == 2
    assert float(Stiefel().residual(out)) <= solver_tol(dtype, 64)
    assert float((out.double() - _svd_polar(y)).abs().max()) < 64 * torch.finfo(dtype).eps


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    p=st.integers(1, 40),
    log_step=st.floats(-6.0, 0.5),
    double=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_polar_newton_schulz_meets_its_tolerance_from_any_retraction_start(
    n, p, log_step, double, seed
):
    # whichever way it stops (computed residual or the recurrence's bound), the frame
    # returned has max |X^T X - I| <= tol, the default tolerance of its dtype and size
    dtype = torch.float64 if double else torch.float32
    n, p = max(n, p), min(n, p)
    _, y = _retraction_start(dtype, 10.0**log_step, n=n, p=p, seed=seed)
    x = polar_newton_schulz(y)
    assert float(Stiefel().residual(x)) <= solver_tol(dtype, n)
