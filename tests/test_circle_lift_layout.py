"""The circle lift's planar layout: the same numbers as interleaved pairs, in the layout of x.

``CircleLift.lift`` and ``random_point`` store the pairs planar (each half contiguous);
every verb takes either layout, computes the same values, and returns pairs laid out as
its point. The optimizers step a planar parameter in place, and its gradient arrives
with the parameter's strides.
"""

from __future__ import annotations

import geoopt
import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given

import geodyn
from geodyn.integrators import RiemannianSGD
from geodyn.integrators._stacks import stacks
from geodyn.integrators._workspace import Workspace
from geodyn.manifolds import CircleLift

LIFT = CircleLift(0.8)


def planar(z: torch.Tensor) -> bool:
    return z.movedim(-1, 0).is_contiguous()


def interleaved(z: torch.Tensor) -> torch.Tensor:
    return z.contiguous()


def points(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = LIFT.random_point(*shape, 2, dtype=dtype, generator=gen)
    u = torch.randn(x.shape, dtype=dtype, generator=gen)
    v = torch.randn(x.shape, dtype=dtype, generator=gen)
    return x, u, v


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64])


@given(shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16))
def test_lift_and_random_point_are_planar(shape, dtype, seed):
    x, _, _ = points(shape, dtype, seed)
    assert planar(x) and x.shape == (*shape, 2)
    gen = torch.Generator().manual_seed(seed)
    q = 0.79 * (2 * torch.rand(shape, dtype=dtype, generator=gen) - 1)
    z = LIFT.lift(q)
    assert planar(z)
    assert torch.equal(LIFT.weight(z), q)


@given(shape=shapes, dtype=dtypes, seed=st.integers(0, 2**16))
def test_every_verb_gives_the_same_bits_in_either_layout(shape, dtype, seed):
    """The lift's own verbs are elementwise on the halves: the same bits in either layout,
    returned in the layout of their point. ``project`` (the sphere's, a norm over the
    pair axis) rounds its sum by the layout: equal to an ulp."""
    x, u, v = points(shape, dtype, seed)
    u = LIFT.proj_tangent(x, u)
    x_i, u_i, v_i = interleaved(x), interleaved(u), interleaved(v)
    for verb, args, args_i in [
        ("proj_tangent", (x, v), (x_i, v_i)),
        ("expmap", (x, u), (x_i, u_i)),
        ("retract", (x, u), (x_i, u_i)),
        ("retr_transp", (x, u, v), (x_i, u_i, v_i)),
    ]:
        out, out_i = getattr(LIFT, verb)(*args), getattr(LIFT, verb)(*args_i)
        for a, b, like, like_i in zip(
            out if verb == "retr_transp" else (out,),
            out_i if verb == "retr_transp" else (out_i,),
            (x, v), (x_i, v_i), strict=False,
        ):
            assert torch.equal(a, b), verb
            assert planar(a) == planar(like) and planar(b) == planar(like_i), verb
    y, y_i = LIFT.project(x * 1.3), LIFT.project(x_i * 1.3)
    torch.testing.assert_close(y, y_i, rtol=2 * torch.finfo(dtype).eps, atol=0)
    assert planar(y) and planar(y_i) == planar(x_i)


@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_the_gradient_through_weight_has_the_points_strides(layout):
    gen = torch.Generator().manual_seed(0)
    z = LIFT.random_point(6, 4, 2, dtype=torch.float64, generator=gen)
    z = z if layout == "planar" else interleaved(z)
    z.requires_grad_()
    a = torch.randn(6, 4, dtype=torch.float64, generator=gen)
    # autograd.grad hands back the gradient as made (no copy into the input's layout)
    (grad,) = torch.autograd.grad((LIFT.weight(z) * a).sum(), z)
    assert grad.stride() == z.stride()
    assert torch.equal(grad, torch.stack((a, torch.zeros_like(a)), dim=-1))


def test_weight_differentiates_twice_and_under_vmap():
    gen = torch.Generator().manual_seed(1)
    z = LIFT.random_point(3, 5, 2, dtype=torch.float64, generator=gen).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: LIFT.weight(t) ** 3, (z,))
    assert torch.autograd.gradgradcheck(lambda t: LIFT.weight(t) ** 3, (z,))
    batched = torch.func.vmap(LIFT.weight)(z.detach())
    assert torch.equal(batched, z.detach()[..., 0])
    jac = torch.func.jacrev(lambda t: LIFT.weight(t).sum())(z.detach())
    assert torch.equal(jac, torch.stack((torch.ones(3, 5), torch.zeros(3, 5)), -1).double())


def test_a_planar_parameter_is_stepped_in_place_with_the_same_bits():
    """RiemannianSGD's fast path runs on a planar parameter in place, and its iterates are,
    bit for bit, those of the same parameter stored interleaved."""
    gen = torch.Generator().manual_seed(2)
    x0 = LIFT.random_point(9, 7, 2, dtype=torch.float64, generator=gen)
    target = torch.randn(9, 7, dtype=torch.float64, generator=gen)
    params = [torch.nn.Parameter(x0.clone()), torch.nn.Parameter(interleaved(x0))]
    assert planar(params[0]) and not planar(params[1])
    opts = [RiemannianSGD([p], lr=0.2, momentum=0.9, manifold=LIFT) for p in params]
    memory = params[0].data_ptr()
    (stack,) = stacks(opts[0].param_groups, lambda p, g: LIFT)
    assert stack.in_place
    for _ in range(5):
        for p, opt in zip(params, opts, strict=True):
            opt.zero_grad()
            ((LIFT.weight(p) - target) ** 2).sum().backward()
            opt.step()
        assert torch.equal(params[0].detach(), params[1].detach())
        buffers = [opt.state[p]["momentum_buffer"] for p, opt in zip(params, opts, strict=True)]
        assert torch.equal(*buffers)
    assert params[0].data_ptr() == memory and planar(params[0])
    assert planar(opts[0].state[params[0]]["momentum_buffer"])


@pytest.mark.parametrize("make", [
    lambda ps: geodyn.Splitting(ps, lr=0.05, gamma=1.0, tau=1e-3, scheme="BAOAB", seed=0),
    lambda ps: geodyn.Constrained(torch.optim.Adam(ps, lr=1e-2)),
])
def test_the_integrators_keep_a_planar_parameter_planar(make):
    gen = torch.Generator().manual_seed(3)
    z = LIFT.random_point(8, 6, 2, dtype=torch.float64, generator=gen)
    param = geoopt.ManifoldParameter(z.clone(), manifold=LIFT)
    target = torch.randn(8, 6, dtype=torch.float64, generator=gen)
    opt = make([param])
    for _ in range(4):
        opt.zero_grad()
        ((LIFT.weight(param) - target) ** 2).sum().backward()
        opt.step()
    assert planar(param)
    assert float(LIFT.residual(param.detach())) <= 1e-14
    for value in opt.state[param].values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            assert planar(value)


def test_kept_memory_has_the_strides_of_its_tensor():
    work = Workspace()
    x = LIFT.random_point(5, 3, 2)
    kept = work.like("x", x)
    assert kept.stride() == x.stride() and work.like("x", x) is kept
    other = work.like("x", interleaved(x))
    assert other is not kept and other.stride() == interleaved(x).stride()
    # a tensor that does not fill its memory gets contiguous memory, kept all the same
    columns = torch.zeros(6, 9)[:, :4]
    kept = work.like("columns", columns)
    assert kept.is_contiguous() and work.like("columns", columns) is kept


def test_only_a_dense_parameter_is_stepped_in_place():
    dense = torch.nn.Parameter(LIFT.random_point(5, 3, 2))
    columns = torch.nn.Parameter(interleaved(LIFT.random_point(5, 6, 2))[:, :3])
    for param, in_place in ((dense, True), (columns, False)):
        (stack,) = stacks([{"params": [param]}], lambda p, g: LIFT)
        assert stack.in_place is in_place


def test_noise_is_drawn_in_memory_order():
    """A draw into a planar tensor is the draw into a contiguous one, number for number in
    memory: the same generator state gives the same bits, laid out as the tensor."""
    opt = geodyn.Splitting([torch.nn.Parameter(torch.zeros(1))], lr=0.1, seed=5)
    out = torch.empty(2, 4, 3, dtype=torch.float64).movedim(0, -1)
    state = opt.generator.get_state()
    drawn = opt.normal_like(out, out)
    opt.generator.set_state(state)
    reference = torch.randn(2, 4, 3, dtype=torch.float64, generator=opt.generator)
    assert drawn is out and torch.equal(out.movedim(-1, 0), reference)


def test_a_write_into_the_weight_leaves_the_lifted_point_on_the_circle():
    """The module's weight is a copy of q: initialising it in place, as torch.nn.init does,
    writes into that copy and not into z."""
    layer = torch.nn.Linear(4, 3, dtype=torch.float64)
    z = geodyn.constrain(layer, "weight", CircleLift(0.5))
    assert planar(z)
    before = z.detach().clone()
    with torch.no_grad():
        torch.nn.init.uniform_(layer.weight, -0.4, 0.4)
    assert torch.equal(z.detach(), before)
    assert float(CircleLift(0.5).residual(z.detach())) <= 1e-15


@pytest.mark.parametrize("layout", ["planar", "interleaved"])
def test_weight_differentiates_forward(layout):
    gen = torch.Generator().manual_seed(4)
    z = LIFT.random_point(3, 5, 2, dtype=torch.float64, generator=gen)
    z = z if layout == "planar" else interleaved(z)
    tangent = torch.randn(z.shape, dtype=torch.float64, generator=gen)
    value, derivative = torch.func.jvp(LIFT.weight, (z,), (tangent,))
    assert torch.equal(value, z[..., 0]) and torch.equal(derivative, tangent[..., 0])
    jac = torch.func.jacfwd(lambda t: LIFT.weight(t).sum())(z)
    assert torch.equal(jac, torch.stack((torch.ones(3, 5), torch.zeros(3, 5)), -1).double())
