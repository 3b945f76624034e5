"""The Constrained wrapper: any torch optimizer on manifolds, state moved to tangent spaces."""

import copy

import pytest
import torch

from geodyn.integrators import TANGENT_STATE_KEYS, Constrained, NonFiniteError
from geodyn.manifolds import LpSphere, Sphere, Stiefel

DT = torch.float32
BASES = {
    "Adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "SGD-momentum": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=1e-3),
    "RMSprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, momentum=0.5),
    "Adagrad": lambda ps: torch.optim.Adagrad(ps, lr=1e-2),
}
MANIFOLDS = {
    "Sphere": (Sphere(), (6, 5)),
    "Stiefel": (Stiefel(), (7, 3)),
    "LpSphere": (LpSphere(3.0), (4, 6)),
}


def setup(base, manifold_name, put_back="retract", seed=0):
    manifold, shape = MANIFOLDS[manifold_name]
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(manifold.random_point(*shape, dtype=DT, generator=g))
    free = torch.nn.Parameter(torch.randn(5, dtype=DT, generator=g))
    target = torch.randn(shape, dtype=DT, generator=g)
    opt = Constrained(
        BASES[base]([{"params": [x], "manifold": manifold}, {"params": [free]}]), put_back=put_back
    )

    def closure():
        opt.zero_grad()
        loss = ((x - target) ** 2).sum() + (x**4).sum() + ((free - 1) ** 2).sum()
        loss.backward()
        return loss

    return opt, x, free, manifold, closure


GRID = [(b, m, "retract") for b in ("Adam", "AdamW", "SGD-momentum") for m in MANIFOLDS]
GRID += [("Adam", m, "project") for m in MANIFOLDS]
GRID += [(b, "Stiefel", "retract") for b in ("RMSprop", "Adagrad")]


@pytest.mark.parametrize("base, manifold_name, put_back", GRID)
def test_wrapped_optimizers_stay_on_manifold_with_tangent_state(base, manifold_name, put_back):
    opt, x, _, manifold, closure = setup(base, manifold_name, put_back)
    first = float(closure())
    for _ in range(40):
        opt.step(closure)
    assert float(manifold.residual(x.detach())) <= 1e-6
    assert float(closure()) < first
    for key in TANGENT_STATE_KEYS & opt.state[x].keys():
        v = opt.state[x][key]
        normal = v - manifold.proj_tangent(x.detach(), v)
        assert float(normal.abs().max()) <= 1e-6 * max(1.0, float(v.abs().max())), key


def test_unconstrained_parameters_follow_the_base_exactly():
    opt, _, free, _, closure = setup("Adam", "Sphere")
    ref = torch.nn.Parameter(free.detach().clone())
    base = torch.optim.Adam([ref], lr=1e-2)
    for _ in range(10):
        opt.step(closure)
        base.zero_grad()
        ((ref - 1) ** 2).sum().backward()
        base.step()
    assert torch.equal(free.detach(), ref.detach())


def test_second_moments_are_left_alone():
    opt, x, _, _, closure = setup("Adam", "Sphere")
    opt.step(closure)
    g = x.grad.clone()  # the projected gradient the base saw
    torch.testing.assert_close(opt.state[x]["exp_avg_sq"], (1 - 0.999) * g * g)


def test_user_extends_the_tangent_keys():
    opt, x, _, manifold, closure = setup("Adam", "Sphere")
    opt.tangent_state = TANGENT_STATE_KEYS | {"shadow"}
    opt.step(closure)
    opt.state[x]["shadow"] = torch.ones_like(x)
    opt.step(closure)
    shadow = opt.state[x]["shadow"]
    torch.testing.assert_close(manifold.proj_tangent(x.detach(), shadow), shadow)


def test_scheduler_state_dict_and_zero_grad():
    opt, x, free, _, closure = setup("SGD-momentum", "Stiefel")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(4):
        opt.step(closure)
        sched.step()
    assert opt.base.param_groups[0]["lr"] == pytest.approx(1e-2 / 4)
    saved = copy.deepcopy(opt.state_dict())
    opt2, x2, free2, _, closure2 = setup("SGD-momentum", "Stiefel")
    with torch.no_grad():
        x2.copy_(x)
        free2.copy_(free)
    opt2.load_state_dict(saved)
    for _ in range(3):
        opt.step(closure)
        opt2.step(closure2)
    assert torch.equal(x.detach(), x2.detach())
    opt.zero_grad()
    assert x.grad is None


@pytest.mark.parametrize("mode", ["raise", "skip"])
def test_faults_leave_parameters_and_base_state_untouched(mode):
    opt, x, free, _, closure = setup("Adam", "Sphere")
    opt.nonfinite = mode
    for _ in range(3):
        opt.step(closure)
    closure()
    x.grad[0, 0] = float("nan")
    before = [x.detach().clone(), free.detach().clone()]
    state = {k: v.clone() for k, v in opt.state[x].items()}
    if mode == "raise":
        with pytest.raises(NonFiniteError):
            opt.step()
    else:
        with pytest.warns(RuntimeWarning):
            opt.step()
    assert torch.equal(x.detach(), before[0]) and torch.equal(free.detach(), before[1])
    for k, v in state.items():
        assert torch.equal(opt.state[x][k], v)


def test_bad_arguments():
    with pytest.raises(ValueError, match="base_optimizer"):
        Constrained([torch.zeros(2)])
    with pytest.raises(ValueError, match="put_back"):
        Constrained(torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1), put_back="x")


def _sphere_rows(make_base, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.Parameter(Sphere().random_point(6, 5, dtype=torch.float64, generator=g))
    target = torch.randn(6, 5, dtype=torch.float64, generator=g)
    opt = Constrained(make_base([{"params": [x], "manifold": Sphere()}]))

    def closure():
        opt.zero_grad()
        loss = ((x - target) ** 2).sum() + (x**4).sum()
        loss.backward()
        return loss

    first = float(closure())
    for _ in range(steps):
        opt.step(closure)
    return opt, x, first, closure


@pytest.mark.parametrize(
    "make_base, keys",
    [
        (lambda ps: torch.optim.RMSprop(ps, lr=1e-3, centered=True), {"grad_avg"}),
        (lambda ps: torch.optim.RMSprop(ps, lr=1e-3, centered=True, momentum=0.5),
         {"grad_avg", "momentum_buffer"}),
        (lambda ps: torch.optim.NAdam(ps, lr=1e-2), {"exp_avg"}),
        (lambda ps: torch.optim.RAdam(ps, lr=1e-2), {"exp_avg"}),
        (lambda ps: torch.optim.Adamax(ps, lr=1e-2), {"exp_avg"}),
    ],
)
def test_every_torch_first_moment_is_moved_to_the_new_tangent_space(make_base, keys):
    opt, x, first, closure = _sphere_rows(make_base, 40)
    assert keys <= opt.state[x].keys() & TANGENT_STATE_KEYS
    assert float(closure()) < first
    for key in keys:
        v = opt.state[x][key]
        normal = float((v - Sphere().proj_tangent(x.detach(), v)).abs().max())
        assert normal < 1e-12, (key, normal)


def test_lbfgs_gets_the_closure_and_stays_on_the_manifold():
    opt, x, first, closure = _sphere_rows(
        lambda ps: torch.optim.LBFGS(ps, lr=0.5, max_iter=5, history_size=4), 10
    )
    assert float(Sphere().residual(x.detach())) < 1e-12
    assert float(closure()) < 0.5 * first


def test_rollback_copies_are_kept_between_steps_and_a_step_failing_after_the_base_moved_undoes_it():
    def make(nonfinite="skip"):
        x = torch.nn.Parameter(Sphere().random_point(6, 5, dtype=DT, generator=torch.Generator()))
        base = torch.optim.Adam([{"params": [x], "manifold": Sphere()}], lr=0.1)
        return Constrained(base, nonfinite=nonfinite), x

    def grad(i):
        return torch.randn(6, 5, dtype=DT, generator=torch.Generator().manual_seed(i))

    opt, x = make()
    ref, y = make()
    kept = None
    for i in range(8):
        failing = i in (3, 4)  # two in a row: the second after the first handed its copies over
        before = (x.detach().clone(), {k: v.clone() for k, v in opt.state[x].items()})
        x.grad = grad(i) * (1e30 if failing else 1.0)  # finite; its square overflows Adam's state
        if failing:
            with pytest.warns(RuntimeWarning, match="step skipped"):
                opt.step()
            assert torch.equal(x.detach(), before[0])
            assert opt.state[x].keys() == before[1].keys()
            assert all(torch.equal(opt.state[x][k], v) for k, v in before[1].items())
            continue
        opt.step()
        y.grad = grad(i)
        ref.step()
        assert torch.equal(x.detach(), y.detach())
        assert all(torch.equal(v, ref.state[y][k]) for k, v in opt.state[x].items())
        ptrs = {key: t.data_ptr() for key, t in opt._copies.kept().items()}
        if i not in (1, 5):  # a first step with state, and the one after the handover, allocate
            assert kept is None or ptrs == kept
        kept = ptrs
