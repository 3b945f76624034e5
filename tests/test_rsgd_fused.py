"""The fast paths of Riemannian SGD (``fused_momentum_step``: Oblique rows, the circle
lift, the norm ball, the Lp sphere, Stiefel with the qr retraction): the same iterates
as the generic step, all or nothing on a fault, the generic path where the fast path's
accuracy would not hold."""

from __future__ import annotations

import copy

import pytest
import torch

import geodyn.functional as F
from geodyn.integrators import NonFiniteError, RiemannianSGD
from geodyn.manifolds import (
    CircleLift,
    ConvergenceError,
    LpSphere,
    NeuronSpheres,
    NormBall,
    Oblique,
    Stiefel,
)
from geodyn.manifolds._tol import solver_tol
from geodyn.manifolds.base import fresh

DT = torch.float64


class CountingWrites:
    """A mixin counting the fast-path writes of a manifold."""

    writes = 0

    def fused_momentum_step(self, *args, **kw):  # noqa: ANN002, ANN003, ANN201
        fused = super().fused_momentum_step(*args, **kw)
        if fused is None:
            return None

        def write(x_out, buf_out):  # noqa: ANN001, ANN202
            self.writes += 1
            return fused.write(x_out, buf_out)

        return type(fused)(fused.checks, write)


class Counting(CountingWrites, Oblique):
    """Oblique rows that count the fast-path writes."""

    def __init__(self) -> None:
        super().__init__(radius=1.5)


class CountingBall(CountingWrites, NormBall):
    """The norm ball, counting the fast-path writes."""

    def __init__(self) -> None:
        super().__init__(1.3)


class CountingLp(CountingWrites, LpSphere):
    """An Lp sphere, counting the fast-path writes."""


class CountingLift(CountingWrites, CircleLift):
    """The circle lift, counting the fast-path writes."""

    def __init__(self) -> None:
        super().__init__(0.7)


class CountingStiefel(CountingWrites, Stiefel):
    """Stiefel (qr retraction by default), counting the fast-path writes."""


def _grad(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (x - t) + 0.4 * x**3


def _follows_the_generic_step(manifold, x0, grad, *, lr, steps, tol, **kw):  # noqa: ANN001, ANN201
    """RiemannianSGD on ``manifold`` against ``F.rsgd_step`` for ``steps`` steps, point and
    buffer compared at each; the final parameter."""
    param = torch.nn.Parameter(x0.clone())
    opt = RiemannianSGD([param], lr=lr, manifold=manifold, **kw)
    x, buf = x0, None
    for _ in range(steps):
        param.grad = grad(param.detach())
        opt.step()
        x, buf = F.rsgd_step(manifold, x, grad(x), buf, lr=lr, **kw)
        torch.testing.assert_close(param.detach(), x, **tol)
        if buf is not None:
            torch.testing.assert_close(opt.state[param]["momentum_buffer"], buf, **tol)
    return param.detach()


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2), {}])
@pytest.mark.parametrize("radii", [False, True])
def test_fast_path_equals_the_generic_step(kw, radii):
    gen = torch.Generator().manual_seed(0)
    manifold = NeuronSpheres(torch.rand(6, dtype=DT, generator=gen) + 0.5) if radii else Counting()
    x0 = manifold.random_point(6, 9, dtype=DT, generator=gen)
    t = torch.randn(x0.shape, dtype=DT, generator=gen)
    x = _follows_the_generic_step(manifold, x0, lambda x: _grad(x, t), lr=0.05, steps=8,
                                  tol=dict(rtol=1e-13, atol=1e-13), **kw)
    torch.testing.assert_close(manifold.constraint(x), torch.zeros(6, dtype=DT),
                               rtol=0, atol=1e-15)
    if not radii:
        assert manifold.writes == 8  # every step took the fast path


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2), {}])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_circle_lift_fast_path_equals_the_rotation_step(kw, dtype):
    """The lift's elementwise step = projection + rotation of point and buffer."""
    manifold = CountingLift()
    gen = torch.Generator().manual_seed(3)
    x0 = manifold.lift(0.69 * (2 * torch.rand(7, 5, dtype=DT, generator=gen) - 1)).to(dtype)
    t = torch.randn(x0.shape, dtype=DT, generator=gen).to(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == DT else dict(rtol=1e-5, atol=1e-5)
    x = _follows_the_generic_step(manifold, x0, lambda x: _grad(x, t), lr=0.3, steps=8, tol=tol,
                                  **kw)
    assert float(manifold.residual(x)) <= 4 * torch.finfo(dtype).eps
    assert manifold.writes == 8


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2)])
def test_circle_lift_fast_path_carries_a_buffers_normal_part(kw):
    """A stored buffer off the tangent line (one loaded from half precision, say): the
    generic step rotates its normal part along, and so must the fast path."""
    manifold = CountingLift()
    gen = torch.Generator().manual_seed(4)
    x0 = manifold.lift(0.69 * (2 * torch.rand(7, 5, dtype=DT, generator=gen) - 1))
    old = torch.randn(x0.shape, dtype=DT, generator=gen)
    grad = torch.randn(x0.shape, dtype=DT, generator=gen)
    param = torch.nn.Parameter(x0.clone())
    opt = RiemannianSGD([param], lr=0.3, manifold=manifold, **kw)
    opt.state[param]["momentum_buffer"] = old.clone()
    param.grad = grad
    opt.step()
    x, buf = F.rsgd_step(manifold, x0, grad, old, lr=0.3, **kw)
    assert manifold.writes == 1
    torch.testing.assert_close(param.detach(), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], buf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2), {}])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_norm_ball_fast_path_equals_the_cone_step(kw, dtype):
    """Rows pushed onto the wall and along it: the cone's projection is active."""
    manifold = CountingBall()
    gen = torch.Generator().manual_seed(5)
    x0 = manifold.random_point(9, 4, dtype=DT, generator=gen).to(dtype)
    t = 3 * torch.randn(x0.shape, dtype=DT, generator=gen).to(dtype)  # targets outside
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == DT else dict(rtol=2e-5, atol=2e-5)
    x = _follows_the_generic_step(manifold, x0, lambda x: x - t, lr=0.2, steps=12, tol=tol, **kw)
    assert bool(manifold.on_boundary(x).any())
    assert float(manifold.residual(x)) <= 4 * torch.finfo(dtype).eps
    assert manifold.writes == 12


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2), {}])
@pytest.mark.parametrize("p", [1.5, 3.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lp_sphere_fast_path_equals_the_folded_step(kw, p, dtype):
    manifold = CountingLp(p, 1.2)
    gen = torch.Generator().manual_seed(6)
    x0 = manifold.random_point(7, 5, dtype=DT, generator=gen).to(dtype)
    t = torch.randn(x0.shape, dtype=DT, generator=gen).to(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == DT else dict(rtol=2e-5, atol=2e-5)
    x = _follows_the_generic_step(manifold, x0, lambda x: _grad(x, t), lr=0.05, steps=8,
                                  tol=tol, **kw)
    assert float(manifold.residual(x)) <= 8 * torch.finfo(dtype).eps
    assert manifold.writes == 8


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2), {}])
@pytest.mark.parametrize("shape", [(9, 4), (3, 6, 6), (2, 9, 4)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("retraction", ["qr", "newton-schulz"])
def test_stiefel_fast_path_equals_the_folded_step(kw, shape, dtype, retraction):
    manifold = CountingStiefel(retraction)
    gen = torch.Generator().manual_seed(7)
    x0 = manifold.random_point(*shape, dtype=DT, generator=gen).to(dtype)
    t = torch.randn(x0.shape, dtype=DT, generator=gen).to(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == DT else dict(rtol=2e-5, atol=2e-5)
    x = _follows_the_generic_step(manifold, x0, lambda x: _grad(x, t), lr=0.05, steps=8,
                                  tol=tol, **kw)
    bound = 64 * torch.finfo(dtype).eps if retraction == "qr" else solver_tol(dtype, shape[-2])
    assert float(manifold.residual(x)) <= bound
    assert manifold.writes == 8


@pytest.mark.parametrize("retraction", ["qr", "newton-schulz"])
@pytest.mark.parametrize("dampening", [0.0, 0.2])
def test_stiefel_fast_path_takes_a_strided_gradient_and_buffer(retraction, dampening):
    """Called directly (fresh temporaries) on a batch of frames with a gradient and a
    buffer not laid out like x: the same step as on contiguous copies."""
    gen = torch.Generator().manual_seed(9)
    manifold = Stiefel(retraction)
    x = manifold.random_point(2, 3, 9, 4, dtype=DT, generator=gen)
    g = torch.randn(3, 2, 9, 4, dtype=DT, generator=gen).transpose(0, 1)
    old = torch.randn(3, 2, 9, 4, dtype=DT, generator=gen).transpose(0, 1)
    hyper = dict(lr=0.05, momentum=0.9, dampening=dampening)
    strided = manifold.fused_momentum_step(x, g, old, **hyper)
    contiguous = manifold.fused_momentum_step(x, g.contiguous(), old.contiguous(), **hyper)
    for a, b in zip(strided.write(None, None), contiguous.write(None, None), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize(
    ("shape", "scale"), [((4, 9), 1.0), ((9, 4), 30.0)], ids=["wide", "ill-conditioned"]
)
def test_stiefel_steps_outside_the_fast_path_take_the_generic_step(shape, scale):
    # wide frames have no fast path; a step that leaves X - lr b with kappa^2 above the
    # one-pass bound needs CholeskyQR2 (the generic retraction)
    manifold = CountingStiefel()
    gen = torch.Generator().manual_seed(8)
    x0 = manifold.random_point(*shape, dtype=DT, generator=gen)
    g = scale * torch.randn(x0.shape, dtype=DT, generator=gen)
    param = torch.nn.Parameter(x0.clone())
    opt = RiemannianSGD([param], lr=0.1, momentum=0.9, manifold=manifold)
    param.grad = g
    opt.step()
    assert manifold.writes == 0
    expected, _ = F.rsgd_step(manifold, x0, g, lr=0.1, momentum=0.9)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize(
    "make", [CountingLift, CountingBall, lambda: CountingLp(3.0), CountingStiefel,
             lambda: CountingStiefel("newton-schulz")]
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["grad", "buffer", "param"])
def test_elementwise_fast_paths_never_commit_nonfinite_values(make, bad, where):
    manifold = make()
    gen = torch.Generator().manual_seed(4)
    param = torch.nn.Parameter(manifold.random_point(6, 2, dtype=DT, generator=gen))
    opt = RiemannianSGD([param], lr=0.1, momentum=0.9, manifold=manifold)
    param.grad = torch.randn(param.shape, dtype=DT, generator=gen)
    opt.step()
    param.grad = torch.randn(param.shape, dtype=DT, generator=gen)
    target = {"grad": param.grad, "buffer": opt.state[param]["momentum_buffer"],
              "param": param.data}[where]
    target[2, 1] = bad
    before = param.detach().clone(), opt.state[param]["momentum_buffer"].clone()
    # the generic step checks the gradient first; Newton-Schulz reports a non-finite Y
    # (from the point or the buffer) as the iteration's failure
    newton_schulz = getattr(manifold, "retraction", None) == "newton-schulz"
    error = ConvergenceError if newton_schulz and where != "grad" else NonFiniteError
    with pytest.raises(error):
        opt.step()
    torch.testing.assert_close(param.detach(), before[0], equal_nan=True)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], before[1], equal_nan=True)
    assert manifold.writes == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("where", ["grad", "buffer", "param"])
def test_nonfinite_values_are_never_committed(bad, where):
    manifold = Counting()
    gen = torch.Generator().manual_seed(1)
    param = torch.nn.Parameter(manifold.random_point(5, 4, dtype=DT, generator=gen))
    opt = RiemannianSGD([param], lr=0.1, momentum=0.9, manifold=manifold, nonfinite="skip")
    param.grad = torch.randn(param.shape, dtype=DT, generator=gen)
    opt.step()
    param.grad = torch.randn(param.shape, dtype=DT, generator=gen)
    target = {"grad": param.grad, "buffer": opt.state[param]["momentum_buffer"],
              "param": param.data}[where]
    target[2, 1] = bad
    before = param.detach().clone(), opt.state[param]["momentum_buffer"].clone()
    with pytest.warns(RuntimeWarning, match="skipped"):
        opt.step()
    torch.testing.assert_close(param.detach(), before[0], equal_nan=True)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], before[1], equal_nan=True)
    assert manifold.writes == 1
    opt.nonfinite = "raise"
    with pytest.raises(NonFiniteError):
        opt.step()


def test_a_step_too_long_for_the_identity_takes_the_generic_path():
    manifold = Counting()
    gen = torch.Generator().manual_seed(2)
    x0 = manifold.random_point(5, 4, dtype=DT, generator=gen)
    g = 1e3 * x0 + torch.randn(x0.shape, dtype=DT, generator=gen)  # lr |g| >> |x|
    param = torch.nn.Parameter(x0.clone())
    opt = RiemannianSGD([param], lr=0.1, manifold=manifold)
    param.grad = g
    opt.step()
    assert manifold.writes == 0
    expected, _ = F.rsgd_step(manifold, x0, g, lr=0.1)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=0)


def test_compiled_stiefel_takes_its_fast_path_eagerly():
    # fused_entrywise = False: the compiled kernels (which would compute the products and
    # the factorisation twice) are never called; the eager fast path writes each step
    manifold = CountingStiefel()
    gen = torch.Generator().manual_seed(9)
    x0 = manifold.random_point(9, 4, dtype=DT, generator=gen)
    param = torch.nn.Parameter(x0.clone())
    opt = RiemannianSGD([param], lr=0.05, momentum=0.9, manifold=manifold, compiled=True)

    def refuse(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a compiled fast-path kernel ran for Stiefel")

    opt._fused_kernels = (refuse, refuse)
    x, buf = x0, None
    for _ in range(3):
        param.grad = _grad(param.detach(), x0)
        opt.step()
        x, buf = F.rsgd_step(manifold, x, _grad(x, x0), buf, lr=0.05, momentum=0.9)
    assert manifold.writes == 3
    torch.testing.assert_close(param.detach(), x, rtol=1e-12, atol=1e-12)


class Scratches:
    """A mixin recording, per call, the tensors the fast path takes from the scratch
    RiemannianSGD hands it (or, with ``drop``, handing on ``fresh``: every op then
    allocates)."""

    drop = False

    def fused_momentum_step(self, *args, scratch=fresh, **kw):  # noqa: ANN002, ANN003, ANN201
        taken = {}
        self.seen = [*getattr(self, "seen", []), taken]

        def recording(name, shape, like):  # noqa: ANN001, ANN202
            taken[name] = t = scratch(name, shape, like)
            return t

        return super().fused_momentum_step(*args, scratch=fresh if self.drop else recording,
                                           **kw)


SCRATCH_CASES = {  # a point with n rows (or n frames, n pairs)
    "rows": (lambda: Oblique(radius=1.5),
             lambda m, n, g: m.random_point(n, 9, dtype=DT, generator=g)),
    "ball": (lambda: NormBall(1.3), lambda m, n, g: m.random_point(n, 4, dtype=DT, generator=g)),
    "lp": (lambda: LpSphere(3.0), lambda m, n, g: m.random_point(n, 7, dtype=DT, generator=g)),
    "lift": (lambda: CircleLift(0.7),
             lambda m, n, g: m.lift(0.69 * (2 * torch.rand(n, 5, dtype=DT, generator=g) - 1))),
    "stiefel": (lambda: Stiefel(), lambda m, n, g: m.random_point(n, 8, 3, dtype=DT, generator=g)),
    "stiefel-ns": (lambda: Stiefel("newton-schulz"),
                   lambda m, n, g: m.random_point(n, 8, 3, dtype=DT, generator=g)),
}


@pytest.mark.parametrize("name", SCRATCH_CASES)
@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.5, dampening=0.2)])
def test_fast_path_scratch_is_kept_per_parameter_and_changes_no_bit(name, kw):
    """Each parameter's fast path takes its temporaries from memory of its own, the same
    for the same name at every step (from the first, for those it takes then); the
    iterates are those of the fast path allocating afresh, bit for bit."""
    make, point = SCRATCH_CASES[name]
    runs = []
    for drop in (False, True):
        manifold = _with_scratches(make(), drop)
        gen = torch.Generator().manual_seed(11)
        # a group each: each parameter a stack of its own, viewed in place
        params = [torch.nn.Parameter(point(manifold, n, gen)) for n in (6, 5)]
        targets = [torch.randn(p.shape, dtype=DT, generator=gen) for p in params]
        opt = RiemannianSGD([{"params": [p]} for p in params], lr=0.05, manifold=manifold,
                            **kw)
        for _ in range(4):
            for p, t in zip(params, targets, strict=True):
                p.grad = _grad(p.detach(), t)
            opt.step()
        runs.append((manifold, [p.detach().clone() for p in params],
                     [opt.state[p]["momentum_buffer"].clone() for p in params]))
    (kept, x_kept, b_kept), (_, x_fresh, b_fresh) = runs
    per_param = [kept.seen[i::2] for i in range(2)]  # steps alternate the two params
    memory = []
    for calls, x in zip(per_param, x_kept, strict=True):
        later = calls[1:]  # with a buffer: the same temporaries at every step
        assert later[0] and all(c.keys() == later[0].keys() for c in later)
        for name, t in later[0].items():
            assert t is not None and t.dtype == x.dtype
            assert {c[name].data_ptr() for c in calls if name in c} == {t.data_ptr()}
        memory.append({t.data_ptr() for t in later[0].values()})
    assert not memory[0] & memory[1]
    for a, b in zip(x_kept + b_kept, x_fresh + b_fresh, strict=True):
        assert torch.equal(a, b)


def _with_scratches(manifold, drop):  # noqa: ANN001, ANN202
    """``manifold`` as an instance of its class with the Scratches mixin."""
    kind = type(manifold)
    mixed = type(kind.__name__, (Scratches, kind), {"drop": drop})
    clone = object.__new__(mixed)
    clone.__dict__.update(manifold.__dict__)
    return clone


# per fast path, the verbs of the generic step it rewrites
REWRITTEN = {
    "rows": ("proj_tangent", "rattle", "retract", "transp"),
    "ball": ("proj_tangent", "retract", "transp", "retr_transp"),
    "lp": ("proj_tangent", "normal", "retract"),
    "lift": ("proj_tangent", "retr_transp"),
    "stiefel": ("proj_tangent", "retract"),
    "stiefel-ns": ("proj_tangent", "retract"),
}


@pytest.mark.parametrize(
    ("name", "verb"), [(name, verb) for name, verbs in REWRITTEN.items() for verb in verbs]
)
def test_a_subclass_overriding_a_rewritten_verb_has_no_fast_path(name, verb):
    """A fast path stands in for the verbs of the step: where a subclass overrides one
    (here with the same values), the fast path declines and the generic step, which calls
    the override, runs."""
    make, point = SCRATCH_CASES[name]
    manifold = make()
    base = type(manifold)

    def delegate(self, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        return getattr(super(own, self), verb)(*args, **kw)

    own = type(f"Own{verb}", (base,), {verb: delegate})
    twin = copy.copy(manifold)
    twin.__class__ = own
    gen = torch.Generator().manual_seed(5)
    x = point(manifold, 4, gen)
    g, old = torch.randn(x.shape, dtype=DT, generator=gen), manifold.proj_tangent(
        x, torch.randn(x.shape, dtype=DT, generator=gen))
    hyper = dict(lr=0.05, momentum=0.9, dampening=0.0)
    assert manifold.fused_momentum_step(x, g, old, **hyper) is not None
    assert twin.fused_momentum_step(x, g, old, **hyper) is None


def test_a_sticky_ball_follows_its_own_projection():
    """A ball whose proj_tangent also removes inward velocities at the wall: RSGD steps
    by that projection (the generic step), not by the ball's fast path."""

    class StickyBall(NormBall):
        def proj_tangent(self, x, v):  # noqa: ANN001, ANN202
            normal = x * ((x * v).sum(-1, keepdim=True) / (x * x).sum(-1, keepdim=True))
            return torch.where(self.on_boundary(x), v - normal, v)

    manifold = StickyBall(1.0)
    gen = torch.Generator().manual_seed(2)
    x0 = manifold.random_point(8, 5, dtype=DT, generator=gen)
    x0[::2] = x0[::2] / x0[::2].norm(dim=-1, keepdim=True)  # half the rows at the wall
    t = 3 * torch.randn(x0.shape, dtype=DT, generator=gen)
    _follows_the_generic_step(manifold, x0, lambda x: _grad(x, t), lr=0.1, steps=5,
                              tol=dict(rtol=1e-13, atol=1e-13), momentum=0.9)
