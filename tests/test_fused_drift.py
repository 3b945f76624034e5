"""The SHAKE/RATTLE drift on rows from row sums (Manifold.fused_drift) and the memory
Splitting keeps for its letters: against the generic verbs, step by step, and their
guards."""

from __future__ import annotations

import pytest
import torch
from fused_twins import LIFT, LP, TWINS, GenericCircleLift, GenericSphere, point_shape
from hypothesis import given, settings
from hypothesis import strategies as st

from geodyn.integrators import Splitting
from geodyn.manifolds import CircleLift, ConvergenceError, NormBall, Oblique, Sphere
from geodyn.manifolds.base import shake_drift

F64 = torch.float64


class GenericBall(NormBall):
    """The ball with an overridden (identical) drift: no fast path applies."""

    def drift(self, x, p, h, *, rattle=True):
        return super().drift(x, p, h, rattle=rattle)


BALL = (lambda: NormBall(1.5), lambda: GenericBall(1.5))


@pytest.mark.parametrize("name", TWINS)
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    h=st.floats(1e-4, 0.4),
    tangent=st.booleans(),
    rattle=st.booleans(),
    project=st.booleans(),
)
def test_fused_drift_equals_shake_then_rattle(name, seed, h, tangent, rattle, project):
    """x' = shake(x, x + h q) and p' = rattle_x'((x' - x)/h) (or unprojected), q = P_x p
    with ``project`` and p otherwise, from the row sums alone, equal the verbs' to
    rounding; x is left as it was."""
    fast, generic = TWINS[name][0](), TWINS[name][1]()
    g = torch.Generator().manual_seed(seed)
    x = fast.random_point(6, 5, dtype=F64, generator=g)
    p = torch.randn(6, 5, dtype=F64, generator=g)
    if tangent:
        p = fast.proj_tangent(x, p)
    x_before, p_fast, out = x.clone(), p.clone(), torch.full_like(x, float("nan"))
    try:
        q = generic.proj_tangent(x, p) if project else p
        x_ref, p_ref = shake_drift(generic, x, q, h, rattle=rattle)
    except ConvergenceError:  # too long a step: the fast path raises or leaves it to them
        try:
            fused = fast.fused_drift(x, p_fast, h, rattle=rattle, project=project)
        except ConvergenceError:
            return
        assert fused is not None and not bool(torch.isfinite(fused.checks).all())
        return
    fused = fast.fused_drift(x, p_fast, h, rattle=rattle, project=project)
    assert fused is not None and bool(torch.isfinite(fused.checks).all())
    new = fused.write(None, None)  # into new tensors, reading x and p only
    assert torch.equal(p_fast, p) and torch.equal(x, x_before)
    written = fused.write(out, p_fast)  # into out, and over p
    assert written[0] is out and written[1] is p_fast and torch.equal(x, x_before)
    for a, b in zip(new, written, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(out, x_ref, rtol=0, atol=1e-13)
    # the verbs' (x' - x)/h cancels: its rounding is about eps |x| / h
    eps = torch.finfo(F64).eps
    atol = 16 * eps * (float(x.abs().max()) / h + float(p.abs().max()))
    torch.testing.assert_close(p_fast, p_ref, rtol=0, atol=atol)
    assert float(fast.residual(out)) < 1e-13
    if rattle:
        assert float((out * p_fast).sum(-1).abs().max()) < 1e-12


def test_fused_drift_is_declared_only_for_oblique_rows_with_their_own_verbs():
    x = Sphere().random_point(4, 3, dtype=F64)
    p = torch.zeros_like(x)
    undeclared = [
        GenericSphere(), Oblique(dim=-2),
        type("OwnShake", (Sphere,), {"shake": lambda self, x, y: Sphere.shake(self, x, y)})(),
        type("OwnDrift", (Sphere,), {"drift": lambda self, *a, **k: Sphere.drift(self, *a, **k)})(),
    ]
    for manifold in undeclared:
        assert manifold.fused_drift(x, p, 0.1) is None
    assert Sphere().fused_drift(x, p, 0.1) is not None
    z = CircleLift().random_point(4, 3, 2, dtype=F64)
    own_transport = type("OwnTransport", (CircleLift,), {
        "retr_transp": lambda self, *a: CircleLift.retr_transp(self, *a)})()
    for manifold in (GenericCircleLift(), own_transport):
        assert manifold.fused_drift(z, torch.zeros_like(z), 0.1) is None
    assert CircleLift().fused_drift(z, torch.zeros_like(z), 0.1) is not None
    assert CircleLift().fused_drift(z, torch.zeros_like(z), 0.1, project=True) is None


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.floats(1e-4, 3.0), tangent=st.booleans(),
       planar=st.booleans(), into=st.sampled_from(["new", "given", "p itself"]))
def test_circle_lift_fused_drift_is_its_rotation(seed, h, tangent, planar, into):
    """x' and p' of the lift's fast drift are drift(x, p, h)'s, the rotation of x and p by
    the angle h t of p, to rounding, in either layout and into new memory, given memory
    or over p itself."""
    lift = CircleLift(0.9)
    g = torch.Generator().manual_seed(seed)
    x = lift.random_point(5, 4, 2, dtype=F64, generator=g)
    p = torch.randn(x.shape, dtype=F64, generator=g)
    if not planar:
        x, p = x.contiguous(), p.contiguous()
    if tangent:
        p = lift.proj_tangent(x, p)
    x_ref, p_ref = lift.drift(x, p, h)
    fused = lift.fused_drift(x, p, h)
    assert fused is not None and bool(torch.isfinite(fused.checks).all())
    outs = {"new": (None, None), "given": (torch.empty_like(x), torch.empty_like(p)),
            "p itself": (torch.empty_like(x), p)}[into]
    # the two round the angle h t differently by a few eps |h t|, which moves x by
    # r times that and p by |p| times that
    angle = h * float(lift._coordinate(x, p)[2].abs().max())
    x_new, p_new = fused.write(*outs)
    tol = 16 * torch.finfo(F64).eps * (1 + angle)
    torch.testing.assert_close(x_new, x_ref, rtol=0, atol=tol * lift.radius)
    torch.testing.assert_close(p_new, p_ref, rtol=0, atol=tol * float(p_ref.abs().max()))
    assert float(lift.residual(x_new)) <= 1e-15


def test_fused_drift_too_long_raises_as_shake_does_and_writes_nothing():
    """A tangent step twice the radius has no SHAKE multiplier: both raise. One longer
    than 4 |x| is left to the verbs (its checks fail), which raise."""
    sphere = Sphere()
    x = sphere.random_point(4, 3, dtype=F64)
    p = sphere.proj_tangent(x, torch.randn(4, 3, dtype=F64))
    p = p / p.norm(dim=-1, keepdim=True)
    before = p.clone()
    for h in (2.0, 100.0):
        with pytest.raises(ConvergenceError, match="reduce the step size"):
            sphere.shake(x, x + h * p)
    with pytest.raises(ConvergenceError, match="reduce the step size"):
        sphere.fused_drift(x, p, 2.0)
    fused = sphere.fused_drift(x, p, 100.0)
    assert fused is not None and not bool(torch.isfinite(fused.checks).all())
    assert torch.equal(p, before)


def _run(manifold, scheme, drift, count=1):
    """``count`` weights on ``manifold``: one is stepped in place, several as one stack."""
    g = torch.Generator().manual_seed(3)
    shape = point_shape(manifold)
    xs = [torch.nn.Parameter(manifold.random_point(*shape, dtype=F64, generator=g))
          for _ in range(count)]
    target = torch.randn(shape, dtype=F64, generator=g)
    opt = Splitting([{"params": xs, "manifold": manifold}], lr=0.05, gamma=2.0, tau=0.1,
                    scheme=scheme, drift=drift, seed=11)

    def closure():
        opt.zero_grad()
        loss = sum(((x - target) ** 2).sum() + (x**4).sum() for x in xs)
        loss.backward()
        return loss

    return xs, opt, closure


@pytest.mark.parametrize("name", [*TWINS, "NormBall", *LIFT, *LP])
@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO", "ABOBA", "BAB", "BABAB"])
@pytest.mark.parametrize("drift", ["auto", "shake"])
@pytest.mark.parametrize("count", [1, 2])
def test_splitting_in_place_equals_the_generic_letters_step_by_step(name, scheme, drift, count):
    """Each step, from the same values and the same noise, agrees to rounding with the
    generic letters; after each the twin's values are copied in (chaotic steps would
    amplify rounding otherwise). The positions stay on M."""
    make_fast, make_generic = {**TWINS, "NormBall": BALL, **LIFT, **LP}[name]
    fast, generic = make_fast(), make_generic()
    xs, opt, closure = _run(fast, scheme, drift, count)
    ys, ref, ref_closure = _run(generic, scheme, drift, count)
    for _ in range(6):
        opt.step(closure)
        ref.step(ref_closure)
        for x, y in zip(xs, ys, strict=True):
            torch.testing.assert_close(x.detach(), y.detach(), rtol=0, atol=1e-12)
            p, q = opt.state[x]["momentum"], ref.state[y]["momentum"]
            torch.testing.assert_close(p, q, rtol=0, atol=1e-11)
            assert float(fast.residual(x.detach())) < 1e-12
            with torch.no_grad():
                x.copy_(y)
                p.copy_(q)


def test_splitting_keeps_the_memory_its_letters_write_into_and_a_failed_step_changes_nothing():
    """From the second step on, every letter writes into the same memory (and each
    drift's row dots multiply into the same product); the momentum
    state is never that memory; a step with a NaN gradient under 'skip' leaves the
    weight and the momentum as they were."""
    sphere = Sphere()
    x = torch.nn.Parameter(sphere.random_point(6, 5, dtype=F64))
    opt = Splitting([{"params": [x], "manifold": sphere}], lr=0.05, tau=0.1, seed=0,
                    nonfinite="skip")
    kept = None
    for i in range(6):
        opt.zero_grad()
        (x**4).sum().backward()
        if i == 4:
            x.grad[1, 2] = float("nan")
            before = (x.detach().clone(), opt.state[x]["momentum"].clone())
            with pytest.warns(RuntimeWarning, match="step skipped"):
                opt.step()
            assert torch.equal(x.detach(), before[0])
            assert torch.equal(opt.state[x]["momentum"], before[1])
            continue
        opt.step()
        ptrs = {key: t.data_ptr() for key, t in opt._work.kept().items()}
        # the last drift writes straight into the parameter and its momentum; the drifts
        # multiply x and p into the same kept product for their row dots
        assert {role for _, role in ptrs} == {"p", "x", "noise", "product"}
        assert opt.state[x]["momentum"].data_ptr() not in ptrs.values()
        assert x.data_ptr() not in ptrs.values()
        if kept is not None:
            assert ptrs == kept
        kept = ptrs


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("twin", [0, 1])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_drift_that_overflows_changes_nothing(name, twin, nonfinite):
    """A finite float32 gradient whose kick overflows the drift's sums: both paths fail
    the step (no SHAKE multiplier), and the weight and its momentum stay as they were."""
    manifold = TWINS[name][twin]()
    x = torch.nn.Parameter(manifold.random_point(6, 5, dtype=F64).float())
    opt = Splitting([{"params": [x], "manifold": manifold}], lr=0.05, tau=0.1, seed=0,
                    nonfinite=nonfinite)
    for scale in (1.0, 1.0, 1e25):
        opt.zero_grad()
        (scale * (x**3).sum()).backward()
        before = (x.detach().clone(), opt.state[x].get("momentum", torch.zeros(())).clone())
        if scale == 1.0:
            opt.step()
            continue
        if nonfinite == "raise":
            with pytest.raises(ConvergenceError):
                opt.step()
        else:
            with pytest.warns(RuntimeWarning, match="step skipped"):
                opt.step()
        assert torch.equal(x.detach(), before[0])
        assert torch.equal(opt.state[x]["momentum"], before[1])


def test_a_step_failing_in_a_later_stack_writes_nothing_to_a_deferred_one():
    """The first weight's last drift is written at the commit only: a second weight whose
    drift fails afterwards leaves both weights and momenta as they were."""
    sphere = Sphere()
    x, y = (torch.nn.Parameter(sphere.random_point(6, 5, dtype=F64).float()) for _ in range(2))
    z = torch.nn.Parameter(sphere.random_point(3, 5, dtype=F64).float())  # another stack
    opt = Splitting([{"params": [x], "manifold": sphere}, {"params": [z, y], "manifold": sphere}],
                    lr=0.05, tau=0.1, seed=0, nonfinite="skip")
    for scale in (1.0, 1.0, 1e25):
        opt.zero_grad()
        ((x**3).sum() + (z**3).sum() + scale * (y**3).sum()).backward()
        before = [(w.detach().clone(), opt.state[w].get("momentum", torch.zeros(())).clone())
                  for w in (x, y, z)]
        if scale == 1.0:
            opt.step()
            continue
        assert opt._writable(opt._stacks()[0])  # x's last drift is the deferred write
        with pytest.warns(RuntimeWarning, match="step skipped"):
            opt.step()
        for w, (value, momentum) in zip((x, y, z), before, strict=True):
            assert torch.equal(w.detach(), value)
            assert torch.equal(opt.state[w]["momentum"], momentum)


def test_fused_drift_refuses_a_projection_that_would_cancel_and_the_step_stays_on_m():
    """A long step whose momentum lies along x: folding P_x into
    x' = (s - h c) x + h p would cancel two terms 1e5 times larger than x. The fast
    path's checks fail, and the generic drift (q = P_x p first) keeps the step on the
    sphere: a BAOAB step of h = 1e6 whose noise, drawn from a generator seeded as the
    point's, is parallel to the point (the fault sweep's example)."""
    sphere = Sphere()
    x = sphere.random_point(2, 4, generator=torch.Generator().manual_seed(0))
    p = 0.868 * x + 1e-8 * sphere.proj_tangent(x, torch.ones_like(x))
    fused = sphere.fused_drift(x, p.clone(), 5e5, rattle=True, project=True)
    assert fused is not None and not bool(torch.isfinite(fused.checks).all())
    point = sphere.random_point(2, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.nn.Parameter(point.float())
    opt = Splitting([{"params": [y], "manifold": sphere}], lr=1e6, tau=0.1, seed=0)
    y.grad = torch.zeros_like(y)
    opt.step()
    assert float(sphere.residual(y.detach())) < 1e-5


@pytest.mark.parametrize(("dtype", "lr", "weight_decay"),
                         [(torch.float32, 1.0, 1e4), (torch.float32, 0.1, 1e6),
                          (F64, 1.0, 1e8)])
def test_a_huge_radial_momentum_takes_the_verbs_and_steps_as_they_do(dtype, lr, weight_decay):
    """Weight decay on a sphere is radial: its huge kick is removed by the projection a
    drift folds in. Its row sums have lost their digits, so the fast path leaves those
    rows to the verbs instead of refusing the step, and the step is the verbs' one."""
    sphere = Sphere()
    runs = []
    for drift in ("auto", "shake"):
        point = sphere.random_point(64, 16, dtype=F64, generator=torch.Generator().manual_seed(0))
        w = torch.nn.Parameter(point.to(dtype))
        a = 0.1 * torch.randn(64, 16, dtype=dtype, generator=torch.Generator().manual_seed(1))
        opt = Splitting([w], lr=lr, tau=0.0, manifold=sphere, drift=drift,
                        weight_decay=weight_decay)
        for _ in range(3):
            opt.zero_grad()
            (a * w).sum().backward()
            opt.step()
        runs.append(w.detach())
    # projecting the kick h w x off the sphere's normal rounds at eps h w (|x| = 1) in
    # both, differently: the two agree to that
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=8 * eps * lr * weight_decay)


def test_a_failed_first_step_adds_no_state_entry():
    sphere = Sphere()
    x, y = (torch.nn.Parameter(sphere.random_point(6, 5)) for _ in range(2))
    opt = Splitting([{"params": [x]}, {"params": [y]}], lr=0.05, tau=0.1, manifold=sphere,
                    seed=0, nonfinite="skip")
    x.grad = torch.zeros_like(x)
    y.grad = 1e25 * y.detach() ** 3
    with pytest.warns(RuntimeWarning, match="step skipped"):
        opt.step()
    assert opt.state_dict()["state"] == {}



@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), h=st.floats(1e-3, 2.0), inside=st.booleans())
def test_ball_fused_drift_is_the_free_flight_and_the_verbs_reflection(seed, h, inside):
    """Rows that meet no wall within h fly freely, x' = x + h p (clipped only by
    rounding) and p' = p, as the verbs; rows that do are the verbs' reflection."""
    ball, generic = NormBall(1.5), GenericBall(1.5)
    g = torch.Generator().manual_seed(seed)
    x = ball.random_point(6, 5, dtype=F64, generator=g) * (0.5 if inside else 1.0)
    p = torch.randn(6, 5, dtype=F64, generator=g) * (0.1 if inside else 1.0)
    x_ref, p_ref = generic.drift(x, p, h)
    assert generic.fused_drift(x, p, h) is None
    fused = ball.fused_drift(x, p, h)
    assert fused is not None and bool(torch.isfinite(fused.checks).all())
    before = (x.clone(), p.clone())
    x_new, p_new = fused.write(torch.empty_like(x), None)
    assert torch.equal(x, before[0]) and torch.equal(p, before[1]) and p_new is not p
    torch.testing.assert_close(x_new, x_ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(p_new, p_ref, rtol=0, atol=1e-14)
    q = p.clone()
    assert fused.write(torch.empty_like(x), q)[1] is q  # over the momentum itself
    torch.testing.assert_close(q, p_ref, rtol=0, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), wall=st.booleans(),
       bad=st.sampled_from([None, "nan", "inf"]))
def test_ball_projection_in_place_is_the_cone_projection(seed, wall, bad):
    """v <- P_x v in place equals proj_tangent (the cone at the wall, v inside); a NaN or
    Inf entry of v, inside or at the wall, reaches the checks."""
    ball = NormBall(1.5)
    g = torch.Generator().manual_seed(seed)
    x = ball.random_point(6, 5, dtype=F64, generator=g)
    if wall:
        x[::2] = 1.5 * x[::2] / x[::2].norm(dim=-1, keepdim=True)
    v = torch.randn(6, 5, dtype=F64, generator=g)
    expected = ball.proj_tangent(x, v)
    if bad is not None:
        v[int(torch.randint(6, (1,), generator=g)), 1] = float(bad)
    w = v.clone()
    checks = ball.fused_proj_tangent_(x, w)
    assert checks is not None
    if bad is not None:
        assert not bool(torch.isfinite(checks).all())
        return
    assert bool(torch.isfinite(checks).all())
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-14)
    own_rattle = type("OwnRattle", (NormBall,), {"rattle": NormBall.proj_tangent})()
    assert own_rattle.fused_proj_tangent_(x, v.clone()) is None
