"""Regressions: the circle lift under autograd, Stiefel in half precision and at huge steps."""

from __future__ import annotations

import pytest
import torch

from geodyn import CircleLift, Stiefel
from geodyn.manifolds import default_atol

F64 = torch.float64


def test_circle_lift_retract_and_retr_transp_are_differentiable() -> None:
    m = CircleLift(0.3)
    x = m.lift(torch.tensor([0.1, -0.2], dtype=F64))
    v = torch.full((2, 2), 0.05, dtype=F64, requires_grad=True)
    m.retract(x, v).sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
    # the gradient is right, not merely computed: finite differences in float64
    assert torch.autograd.gradcheck(lambda u: m.retract(x, u), (v.detach().requires_grad_(),))
    w = torch.tensor([[0.01, -0.02], [0.03, 0.0]], dtype=F64)
    assert torch.autograd.gradcheck(
        lambda u, t: m.retr_transp(x, u, t), (v.detach().requires_grad_(), w.requires_grad_())
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("retraction", ["qr", "polar", "cayley", "exp"])
def test_stiefel_half_precision_computes_in_float32(
    retraction: str, dtype: torch.dtype
) -> None:
    m = Stiefel(retraction)
    g = torch.Generator().manual_seed(0)
    x32 = m.random_point(6, 3, generator=g)
    v32 = m.proj_tangent(x32, torch.randn(6, 3, generator=g))
    v32 = 0.05 * v32 / v32.norm()
    x, v = x32.to(dtype), v32.to(dtype)
    for result in (m.retract(x, v), m.shake(x, x + v), m.expmap(x, v)):
        assert result.dtype == dtype
        ok, reason = m.check_point(result)
        assert ok, reason
    # one rounding of the float32 result
    ref = m.retract(x.float(), v.float())
    assert float((m.retract(x, v).float() - ref).abs().max()) <= default_atol(dtype)


def test_stiefel_polar_huge_step_raises_value_error_naming_lr() -> None:
    m = Stiefel("polar")
    g = torch.Generator().manual_seed(0)
    x = m.random_point(6, 3, dtype=F64, generator=g)
    v = m.proj_tangent(x, torch.randn(6, 3, dtype=F64, generator=g)) * 1e157
    with pytest.raises(ValueError, match=r"\blr\b"):
        m.retract(x, v)


def test_lp_sphere_shake_and_drift_are_differentiable() -> None:
    """SHAKE keeps its iterates in kept tensors only where autograd does not record it:
    its gradient in y (and the drift's in x and p) match finite differences."""
    from geodyn.manifolds import LpSphere

    m = LpSphere(3.0, radius=1.1)
    g = torch.Generator().manual_seed(0)
    x = m.random_point(3, 4, dtype=torch.float64, generator=g)
    v = 0.1 * m.proj_tangent(x, torch.randn(x.shape, dtype=torch.float64, generator=g))
    y = (x + v).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: m.shake(x, t), (y,))
    p = v.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: m.drift(a, b, 0.5)[0], (x.clone().requires_grad_(), p)
    )
    with torch.no_grad():
        torch.testing.assert_close(m.shake(x, y), m.shake(x, y.detach()), rtol=0, atol=0)
