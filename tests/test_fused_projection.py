"""The in-place projection on rows (Manifold.fused_proj_tangent_, fused_put_back):
Constrained's gradient projection and put-back and the splitting letters' RATTLE against
the generic verbs they rewrite, and their guards."""

from __future__ import annotations

import pytest
import torch
from fused_twins import LIFT, LP, TWINS, GenericCircleLift, GenericSphere, point_shape

import geodyn.functional as F
from geodyn.integrators import Constrained, NonFiniteError
from geodyn.manifolds import CircleLift, Oblique, Sphere

F64 = torch.float64

BASES = {
    "Adam": lambda ps: torch.optim.Adam(ps, lr=3e-2),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=3e-2, weight_decay=0.1),
    "SGD-momentum": lambda ps: torch.optim.SGD(ps, lr=5e-2, momentum=0.9),
    "RMSprop-centered": lambda ps: torch.optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True),
    "SGD-long": lambda ps: torch.optim.SGD(ps, lr=3.0),  # steps longer than the radius
}


def setup(manifold, base, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = point_shape(manifold)
    x = torch.nn.Parameter(manifold.random_point(*shape, dtype=F64, generator=g))
    target = torch.randn(shape, dtype=F64, generator=g)
    opt = Constrained(BASES[base]([{"params": [x], "manifold": manifold}]))

    def step():
        opt.zero_grad()
        (((x - target) ** 2).sum() + (x**4).sum()).backward()
        opt.step()

    return x, opt, step


@pytest.mark.parametrize("name", [*TWINS, *LIFT, *LP])
@pytest.mark.parametrize("base", BASES)
def test_fast_put_back_equals_the_generic_one(name, base):
    """Step by step from the same values: each step agrees to rounding (the fast one
    then continues from the generic one's values, so that a long step's dynamics do not
    amplify the rounding of earlier steps)."""
    fast, generic = {**TWINS, **LIFT, **LP}[name]
    x_fast, opt_fast, step_fast = setup(fast(), base)
    x_gen, opt_gen, step_gen = setup(generic(), base)
    for _ in range(12):
        step_fast()
        step_gen()
        torch.testing.assert_close(x_fast, x_gen, rtol=0, atol=1e-12)
        state_fast, state_gen = opt_fast.state[x_fast], opt_gen.state[x_gen]
        assert state_fast.keys() == state_gen.keys()
        for key, value in state_fast.items():
            torch.testing.assert_close(value, state_gen[key], rtol=0, atol=1e-12, msg=key)
            value.copy_(state_gen[key])
        with torch.no_grad():
            x_fast.copy_(x_gen)


def test_the_fast_paths_are_declared_only_where_the_verbs_are_oblique_rows():
    x = Sphere().random_point(3, 4, dtype=F64)
    y, v = x + 0.1, torch.ones_like(x)
    assert Sphere().fused_put_back(x, y, [v]) is not None
    assert Sphere().fused_proj_tangent_(x, v.clone()) is not None
    # columns and an overridden verb have none
    for manifold in (Oblique(dim=-2), GenericSphere()):
        assert manifold.fused_put_back(x, y, [v]) is None
        assert manifold.fused_proj_tangent_(x, v) is None
        assert manifold.fused_momentum_step(x, v, None, lr=0.1, momentum=0.0,
                                            dampening=0.0) is None
    # the circle lift's, pair by pair; not for a twin that overrides its projection
    z = CircleLift().random_point(3, 2, dtype=F64)
    assert CircleLift().fused_put_back(z, z + 0.1, []) is not None
    assert CircleLift().fused_proj_tangent_(z, torch.ones_like(z)) is not None
    assert GenericCircleLift().fused_put_back(z, z + 0.1, []) is None
    assert GenericCircleLift().fused_proj_tangent_(z, torch.ones_like(z)) is None
    # the Lp sphere's projection (no put-back), not for its twin
    fast, generic = LP["LpSphere"]
    assert fast().fused_proj_tangent_(x, v.clone()) is not None
    assert fast().fused_put_back(x, y, [v]) is None
    assert generic().fused_proj_tangent_(x, v.clone()) is None


class Poisoning(torch.optim.Optimizer):
    """SGD whose step writes ``value`` into the parameter or into its state."""

    def __init__(self, params, where, value):
        super().__init__(params, {"lr": 0.1})
        self.where, self.value = where, value

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state.setdefault("exp_avg", torch.zeros_like(p)).mul_(0.9).add_(p.grad)
                state.setdefault("scale", torch.ones_like(p))
                p.add_(state["exp_avg"], alpha=-group["lr"])
                if self.where == "param":
                    p[0, 0] = self.value
                elif self.where == "scale":
                    state["scale"][1, 2] = self.value


@pytest.mark.parametrize("where", ["param", "scale"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("mode", ["raise", "skip"])
@pytest.mark.parametrize("make", [Sphere, CircleLift])
def test_a_nonfinite_base_result_is_never_committed(where, bad, mode, make):
    manifold = make()
    x = torch.nn.Parameter(manifold.random_point(*point_shape(manifold), dtype=F64))
    opt = Constrained(Poisoning([{"params": [x], "manifold": manifold}], "none", bad),
                      nonfinite=mode)
    for _ in range(3):
        opt.zero_grad()
        (x**3).sum().backward()
        opt.step()
    before = x.detach().clone()
    state = {k: v.clone() for k, v in opt.state[x].items()}
    opt.base.where = where
    opt.zero_grad()
    (x**3).sum().backward()
    if mode == "raise":
        with pytest.raises(NonFiniteError):
            opt.step()
    else:
        with pytest.warns(RuntimeWarning, match="skipped"):
            opt.step()
    assert torch.equal(x.detach(), before)
    for key, value in state.items():
        assert torch.equal(opt.state[x][key], value), key


@pytest.mark.parametrize("name", [*TWINS, *LIFT, *LP])
def test_splitting_letters_rattle_in_place_as_the_generic_rattle(name):
    """kick, drift and thermostat on rows and on the circle lift RATTLE the momenta they
    made in place; each equals the generic RATTLE's result, and the inputs are left as
    they were."""
    fast, generic = {**TWINS, **LIFT, **LP}[name]
    g = torch.Generator().manual_seed(1)
    shape = point_shape(fast())
    x = fast().random_point(*shape, dtype=F64, generator=g)
    p, grad, noise = (torch.randn(shape, dtype=F64, generator=g) for _ in range(3))
    inputs = [t.clone() for t in (x, p, grad, noise)]
    m_fast, m_gen = fast(), generic()
    pairs = [
        (F.kick(m_fast, x, p, grad, 0.1), F.kick(m_gen, x, p, grad, 0.1)),
        (F.drift(m_fast, x, p, 0.05)[1], F.drift(m_gen, x, p, 0.05)[1]),
        (F.thermostat(m_fast, x, p, noise, h=0.1, gamma=1.0, tau=0.5, project=True),
         F.thermostat(m_gen, x, p, noise, h=0.1, gamma=1.0, tau=0.5, project=True)),
        (F.thermostat(m_fast, x, p, None, h=0.1, gamma=1.0, tau=0.0, project=True),
         F.thermostat(m_gen, x, p, None, h=0.1, gamma=1.0, tau=0.0, project=True)),
    ]
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    for before, now in zip(inputs, (x, p, grad, noise), strict=True):
        assert torch.equal(before, now)


@pytest.mark.parametrize("name", TWINS)
@pytest.mark.parametrize("twin", [0, 1])
def test_a_zero_row_raises_and_changes_nothing(name, twin):
    """A zero row has no tangent space: both paths raise, with no tangent state to move
    (plain SGD), and leave the weight as it was."""
    manifold = TWINS[name][twin]()
    x = torch.nn.Parameter(manifold.random_point(6, 5, dtype=F64))
    with torch.no_grad():
        x[2] = 0.0
    opt = Constrained(torch.optim.SGD([{"params": [x], "manifold": manifold}], lr=0.1))
    (x**3).sum().backward()
    before = x.detach().clone()
    with pytest.raises(NonFiniteError):
        opt.step()
    assert torch.equal(x.detach(), before)
