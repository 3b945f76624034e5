"""Scheme words: compilation, the merged-kick rule W^n = P (S P)^(n-1) S, closures."""

import math

import pytest
import torch

from geodyn.integrators import Splitting, compile_scheme
from geodyn.manifolds import Sphere

DT = torch.float64
A_VEC = torch.tensor([0.3, -1.2, 0.7], dtype=DT)


def potential(x):
    return (x * A_VEC).sum() + 0.5 * (x**3).sum() + (x[..., 0] * x[..., 1]).sum()


def grad_u(x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(potential(x), x)
    return g


def naive(word, manifold, x, h, gamma, n):
    """W^n letter by letter, a fresh gradient at every B (the reference)."""
    p = torch.zeros_like(x)
    trajectory = []
    for _ in range(n):
        for c in word:
            f = h / word.count(c)
            if c == "B":
                p = manifold.proj_tangent(x, p - f * grad_u(x))
            elif c == "A":
                x_new = manifold.shake(x, x + f * p)
                p = manifold.proj_tangent(x_new, (x_new - x) / f)
                x = x_new
            else:
                p = math.exp(-gamma * f) * p
        trajectory.append(x)
    return trajectory, p


def run(word, x0, h, gamma, n, with_closure=False, finish=True):
    x = torch.nn.Parameter(x0.clone())
    opt = Splitting([x], lr=h, gamma=gamma, scheme=word, manifold=Sphere(), seed=0)

    def closure():
        opt.zero_grad()
        loss = potential(x)
        loss.backward()
        return loss

    trajectory = []
    for _ in range(n):
        if with_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
        trajectory.append(x.detach().clone())
    if finish:
        closure()
        opt.finalize()
    return trajectory, x.detach().clone(), opt.state[x]["momentum"]


def start():
    g = torch.Generator().manual_seed(3)
    return Sphere().random_point(4, 3, dtype=DT, generator=g)


def test_compile_baoab_and_obabo():
    baoab = compile_scheme("BAOAB")
    assert baoab.first == (("B", 0.5), ("A", 0.5), ("O", 1.0), ("A", 0.5))
    assert baoab.later == (("B", 1.0), ("A", 0.5), ("O", 1.0), ("A", 0.5))
    assert baoab.finish == (("B", 0.5),)
    obabo = compile_scheme("OBABO")
    assert obabo.later == (("B", 0.5), ("O", 1.0), ("B", 0.5), ("A", 1.0))
    assert compile_scheme("BABAB").groups == 2 and compile_scheme("BABAB").needs_closure
    assert compile_scheme("ABOBA").groups == 1 and not compile_scheme("ABOBA").needs_closure


@pytest.mark.parametrize("word", ["", "BAX", "baoab", None])
def test_bad_scheme_is_refused(word):
    with pytest.raises(ValueError, match="scheme"):
        Splitting([torch.nn.Parameter(torch.zeros(3))], lr=0.1, scheme=word)


@pytest.mark.parametrize("word", ["BAOAB", "ABOBA", "OBABO", "BAB", "BOA", "OBAOB", "AOBBOA"])
def test_merged_steps_then_finalize_equal_the_word(word):
    x0, h, gamma, n = start(), 0.05, 1.5, 7
    reference, p_ref = naive(word, Sphere(), x0, h, gamma, n)
    _, x, p = run(word, x0, h, gamma, n)
    torch.testing.assert_close(x, reference[-1], rtol=0, atol=1e-12)
    torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("word", ["BAOAB", "OBABO", "BAB"])
def test_positions_after_each_step_are_the_words(word):
    x0, h, gamma, n = start(), 0.05, 1.5, 6
    reference, _ = naive(word, Sphere(), x0, h, gamma, n)
    trajectory, _, _ = run(word, x0, h, gamma, n, finish=False)
    for ours, ref in zip(trajectory, reference, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("word", ["BABAB", "ABAB", "BAOBAB"])
def test_several_kick_groups_use_the_closure(word):
    x0, h, gamma, n = start(), 0.05, 1.5, 5
    reference, p_ref = naive(word, Sphere(), x0, h, gamma, n)
    trajectory, x, p = run(word, x0, h, gamma, n, with_closure=True, finish=False)
    for ours, ref in zip(trajectory, reference, strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(p, p_ref, rtol=0, atol=1e-12)


def test_several_kick_groups_without_closure_raise():
    x = torch.nn.Parameter(start())
    opt = Splitting([{"params": [x], "manifold": Sphere()}], lr=0.1, scheme="BABAB")
    potential(x).backward()
    before = x.detach().clone()
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    assert torch.equal(x.detach(), before) and x not in opt.state


def test_momentum_starts_at_zero_not_at_the_gradient():
    x = torch.nn.Parameter(start())
    opt = Splitting([{"params": [x], "manifold": Sphere()}], lr=0.1, gamma=0.0, scheme="A")
    potential(x).backward()
    before = x.detach().clone()
    opt.step()
    # a zero momentum drifts nowhere (a gradient-initialised one would move x by ~lr |g|)
    torch.testing.assert_close(x.detach(), before, rtol=0, atol=1e-14)
    assert float(opt.state[x]["momentum"].abs().max()) < 1e-13


def test_rattle_skipping_is_decided_when_the_word_is_compiled():
    from geodyn.integrators.schemes import lower

    later = compile_scheme("BAOAB").later  # B A O A
    steps = lower(later, True)
    assert [s.rattle for s in steps] == [True, False, True, True]  # the A before O leaves it
    assert [s.project for s in steps] == [False, False, True, False]  # the O carries it
    assert all(s.rattle and not s.project for s in lower(later, False))
    obabo = lower(compile_scheme("OBABO").later, True)  # B O B A: the last A rattles
    assert [s.rattle for s in obabo] == [True] * 4 and not any(s.project for s in obabo)


def test_a_products_drift_is_each_factors_own():
    from geodyn.manifolds import CircleLift, Product
    from geodyn.manifolds.base import shake_drift

    circle, sphere = CircleLift(0.3), Sphere()
    product = Product((circle, (4, 2)), (sphere, (3,)))
    g = torch.Generator().manual_seed(0)
    x = product.random_point(5, 11, dtype=torch.float64, generator=g)
    p = product.random_tangent(x, generator=g)
    y, q = product.drift(x, p, 0.1)
    xc, xs = x[:, :8].reshape(5, 4, 2), x[:, 8:]
    pc, ps = p[:, :8].reshape(5, 4, 2), p[:, 8:]
    yc, qc = circle.drift(xc, pc, 0.1)
    ys, qs = shake_drift(sphere, xs, ps, 0.1)
    torch.testing.assert_close(y, torch.cat([yc.reshape(5, 8), ys], -1), rtol=0, atol=0)
    torch.testing.assert_close(q, torch.cat([qc.reshape(5, 8), qs], -1), rtol=0, atol=0)
    # the circle's drift is its exact rotation: speed kept, angle h |p| / r
    torch.testing.assert_close(qc.norm(dim=-1), pc.norm(dim=-1), rtol=1e-14, atol=0)
    cos = (xc * yc).sum(-1) / 0.3**2
    torch.testing.assert_close(cos, torch.cos(0.1 * pc.norm(dim=-1) / 0.3), rtol=1e-12, atol=0)


def test_baoab_at_infinite_friction_is_the_leimkuhler_matthews_step():
    # c = exp(-gamma h) = 0: x' = x - d grad U + sqrt(2 d tau) (xi_n + xi_{n+1}) / 2, d = h^2/2
    h, tau, n = 0.1, 0.7, 6
    x = torch.nn.Parameter(torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))
    opt = Splitting([x], lr=h, gamma=1e6, tau=tau, seed=3)
    noise = torch.Generator().manual_seed(3)
    xi = [torch.randn(3, generator=noise, dtype=torch.float64) for _ in range(n)]
    ref, d = x.detach().clone(), h * h / 2
    for k in range(n):
        opt.zero_grad()
        (0.5 * (x**2).sum()).backward()  # grad U = x
        opt.step()
        if k == 0:  # P = B(h/2) A(h/2) O A(h/2): half a kick from rest
            ref = ref - d / 2 * ref + h / 2 * math.sqrt(tau) * xi[0]
        else:
            ref = ref - d * ref + h / 2 * math.sqrt(tau) * (xi[k - 1] + xi[k])
        torch.testing.assert_close(x.detach(), ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("drift", ["auto", "shake", "retract"])
def test_every_drift_option_keeps_the_circle_lift_and_the_sphere(drift):
    from geodyn.manifolds import CircleLift

    g = torch.Generator().manual_seed(2)
    cases = [(CircleLift(0.4), (6, 2)), (Sphere(), (4, 3))]
    params = [torch.nn.Parameter(m.random_point(*s, dtype=torch.float64, generator=g))
              for m, s in cases]
    groups = [{"params": [p], "manifold": m} for p, (m, _) in zip(params, cases, strict=True)]
    opt = Splitting(groups, lr=0.1, gamma=1.0, tau=0.3, drift=drift, seed=0)
    for _ in range(50):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=torch.float64, generator=g)
        opt.step()
    for p, (m, _) in zip(params, cases, strict=True):
        assert float(m.residual(p.detach())) < 1e-12
        mom = opt.state[p]["momentum"]
        assert float((mom - m.proj_tangent(p.detach(), mom)).abs().max()) < 1e-12
