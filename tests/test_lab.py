"""The integrator lab: check_sampler can fail, weak_order tells order 1 from 2, HMC is exact."""

import math

import numpy as np
import pytest
import torch

from geodyn.integrators import ConstrainedHMC, Overdamped, Splitting
from geodyn.manifolds import Sphere
from geodyn.testing import (
    SamplerLawViolation,
    autocorrelation_time,
    check_sampler,
    excludes,
    weak_order,
)
from geodyn.testing.lab import LAB_PROBLEMS, factory
from geodyn.testing.problems import Potential, gaussian, moments, von_mises_fisher

DT = torch.float64


def baoab(tau=1.0):
    def make(ps, h):
        return Splitting(ps, lr=h, gamma=1.0, tau=tau, scheme="BAOAB", seed=3)

    return make


def test_check_sampler_accepts_baoab_on_von_mises_fisher():
    p = von_mises_fisher(3, 2.0)
    report = check_sampler(baoab(), p.manifold, p.potential, p.reference, h=0.1, chains=500,
                           steps=60, burn=20)
    assert report["passed"] and report["dof"] == len(p.reference.names)
    assert all(o["tau_int"] >= 1 and o["se"] > 0 for o in report["observables"])


def test_check_sampler_rejects_a_biased_sampler():
    """BAOAB at tau = 1.3 samples exp(-U/1.3), not exp(-U): the same test rejects it."""
    p = von_mises_fisher(3, 2.0)
    with pytest.raises(SamplerLawViolation, match="p-value"):
        check_sampler(baoab(tau=1.3), p.manifold, p.potential, p.reference, h=0.1, chains=500,
                      steps=60, burn=20)


def test_autocorrelation_time_of_an_ar1_process():
    """AR(1) with coefficient a: tau_int = (1 + a) / (1 - a) (= 9 for a = 0.8)."""
    g = torch.Generator().manual_seed(0)
    a, c, t = 0.8, 200, 2000
    x = torch.zeros(c, t, 1, dtype=DT)
    noise = torch.randn(c, t, 1, dtype=DT, generator=g)
    for i in range(1, t):
        x[:, i] = a * x[:, i - 1] + noise[:, i]
    tau = float(autocorrelation_time(x)[0])
    assert abs(tau - 9.0) < 0.6, tau


# Euclidean Gaussian in R^2, E|x|^2 = 2: the overdamped scheme's law is N(0, 2/(2-h)) exactly,
# so its bias is 2h/(2-h) (first order); OBABO's is 2/(1 - h^2/4) - 2 (second order).
GAUSS = gaussian(2)


def overdamped(ps, h):
    return Overdamped(ps, lr=h, tau=1.0, seed=5)


def obabo(ps, h):
    return Splitting(ps, lr=h, gamma=1.0, tau=1.0, scheme="OBABO", seed=5)


@pytest.fixture(scope="module")
def orders():
    return {
        "Overdamped": weak_order(overdamped, GAUSS, (0.05, 0.1, 0.2), observable="E|x|^2"),
        "OBABO": weak_order(obabo, GAUSS, (0.2, 0.4, 0.6), observable="E|x|^2"),
    }


def test_weak_order_tells_first_from_second_order(orders):
    first, second = orders["Overdamped"], orders["OBABO"]
    print({k: (r["order"], r["interval"]) for k, r in orders.items()})
    assert excludes(first, 2.0) and not excludes(first, 1.0)
    assert excludes(second, 1.0) and not excludes(second, 2.0)


def test_weak_order_rejects_a_first_order_scheme_claimed_second_order(orders):
    assert excludes(orders["Overdamped"], 2.0)


def test_weak_order_biases_match_the_closed_form(orders):
    """Each measured bias is within 4 of its standard errors of the exact discrete-time bias."""
    exact = {
        "Overdamped": lambda h: 2 * h / (2 - h),
        "OBABO": lambda h: 2 / (1 - h * h / 4) - 2,
    }
    for name, r in orders.items():
        for h, b, s in zip(r["step_sizes"], r["bias"], r["se"], strict=True):
            assert abs(b - exact[name](h)) < 4 * s, (name, h, b, s)


@pytest.fixture(scope="module")
def pendulum_orders():
    """BAOAB and the overdamped scheme on the lab's pendulum, at the lab's own design."""
    lab = LAB_PROBLEMS["pendulum"]
    problem = lab.make()
    out = {}
    for word in ("BAOAB", "overdamped"):
        steps, chains = lab.design(word)
        out[word] = weak_order(factory(word, 1.0), problem, steps, observable=lab.observable,
                               chains=chains)
    return out


def test_baoab_and_overdamped_orders_exclude_each_other(pendulum_orders):
    """The same problem: BAOAB's interval excludes order 1, the overdamped one's order 2."""
    baoab_fit, overdamped_fit = pendulum_orders["BAOAB"], pendulum_orders["overdamped"]
    print({k: (r["order"], r["interval"]) for k, r in pendulum_orders.items()})
    assert excludes(baoab_fit, 1.0)
    assert excludes(overdamped_fit, 2.0) and not excludes(overdamped_fit, 1.0)


def test_weak_order_needs_three_step_sizes():
    with pytest.raises(ValueError, match="step_sizes"):
        weak_order(overdamped, GAUSS, (0.1, 0.2))


# ------------------------------------------------------------------ the exact sampler
def hmc(ps, h):
    return ConstrainedHMC(ps, lr=h, steps=4, seed=7)


def test_hmc_has_no_bias_at_any_step_size():
    """Overdamped-scale biases vanish: HMC's Gaussian E|x|^2 is exact within error at every h."""
    for h in (0.3, 0.6, 0.9):
        r = check_sampler(hmc, GAUSS.manifold, GAUSS.potential, GAUSS.reference, h=h,
                          chains=1000, steps=30, burn=0, alpha=1e-3)
        assert r["passed"], r


def test_hmc_reverse_check_and_solve_failures_reject():
    """Large steps on the sphere: SHAKE fails or picks the far root; those chains stay put."""
    p = von_mises_fisher(3, 2.0)
    x = torch.nn.Parameter(p.reference.sample(100, torch.Generator().manual_seed(0)))
    opt = ConstrainedHMC([x], lr=0.9, steps=3, manifold=Sphere(), seed=1)

    def closure():
        x.grad = p.potential.gradient(x.detach())
        return p.potential.energy(x.detach())

    for _ in range(3):
        opt.step(closure)
    s = opt.stats
    assert s["proposals"] == 300 and s["solve_failures"] + s["reverse_failures"] > 0
    assert float(Sphere().residual(x.detach())) < 1e-10
    state = opt.state_dict()
    assert state["stats"] == s


def test_hmc_needs_a_closure_and_matching_chain_shapes():
    x = torch.nn.Parameter(Sphere().random_point(4, 3, dtype=DT))
    opt = ConstrainedHMC([x], lr=0.1, manifold=Sphere())
    with pytest.raises(ValueError, match="closure"):
        opt.step()

    def wrong():
        x.grad = torch.zeros_like(x)
        return torch.zeros(5, dtype=DT)

    with pytest.raises(ValueError, match="one value per chain"):
        opt.step(wrong)
    with pytest.raises(ValueError, match="steps"):
        ConstrainedHMC([x], lr=0.1, steps=0)


# ------------------------------------------------------------------ mici's constrained HMC
KAPPA, TILT = 2.0, 1.5


def tilted_energy(x):
    return KAPPA * x[..., 2] ** 2 + TILT * x[..., 0]


def tilted_grad(x):
    return torch.stack([torch.full_like(x[..., 0], TILT), torch.zeros_like(x[..., 1]),
                        2 * KAPPA * x[..., 2]], -1)


def mici_chains(n_chains, n_iter, h, n_step, seed):
    mici = pytest.importorskip("mici")

    def constr(x):
        return np.array([x @ x - 1.0])

    system = mici.systems.DenseConstrainedEuclideanMetricSystem(
        lambda x: KAPPA * x[2] ** 2 + TILT * x[0], constr,
        grad_neg_log_dens=lambda x: np.array([TILT, 0.0, 2 * KAPPA * x[2]]),
        jacob_constr=lambda x: 2 * x[None, :], dens_wrt_hausdorff=True,
    )
    integrator = mici.integrators.ConstrainedLeapfrogIntegrator(system, step_size=h)
    rng = np.random.default_rng(seed)
    sampler = mici.samplers.StaticMetropolisHMC(system, integrator, rng, n_step=n_step)
    starts = [v / np.linalg.norm(v) for v in rng.standard_normal((n_chains, 3))]
    _, traces, _ = sampler.sample_chains(
        n_iter // 5, n_iter, starts, trace_funcs=[lambda s: {"x": s.pos}],
        display_progress=False, n_process=1,
    )
    return torch.as_tensor(np.asarray(traces["x"]), dtype=DT)  # (chains, iters, 3)


def test_hmc_agrees_with_mici():
    """Same target (exp(-U) d sigma on S^2, no closed form), both samplers: E x_1 and E x_3^2.

    Two-sample z-test; mici's error from its chains' measured autocorrelation time.
    """
    observe = moments(lambda x: torch.stack([x[..., 0], x[..., 2] ** 2], -1), [0.0, 0.0],
                      ["E x_1", "E x_3^2"], (3,), "tilted Bingham-type law on S^2")
    ours = check_sampler(hmc, Sphere(), Potential(tilted_energy, tilted_grad), observe, h=0.3,
                         chains=1000, steps=40, burn=10, raise_on_failure=False)
    theirs = mici_chains(3, 120, 0.3, 3, seed=11)
    values = torch.stack([theirs[..., 0], theirs[..., 2] ** 2], -1)
    tau = autocorrelation_time(values)
    n = values.shape[0] * values.shape[1]
    mean = values.mean((0, 1))
    se = (values.var((0, 1)) * tau / n).sqrt()
    for j, o in enumerate(ours["observables"]):
        z = (o["mean"] - float(mean[j])) / math.hypot(o["se"], float(se[j]))
        print(o["name"], o["mean"], "+-", o["se"], "mici", float(mean[j]), "+-", float(se[j]))
        assert abs(z) < 3.5, (o["name"], z)  # two observables at family-wise level ~1e-3


def test_geodyn_schemes_writes_the_table_and_plot(tmp_path):
    from geodyn.cli import main

    out = tmp_path / "lab"
    code = main(["schemes", "--schemes", "OBABO,overdamped", "--problems", "gaussian",
                 "--chains", "100", "--time", "1", "--out", str(out)])
    assert code == 0
    text = (out / "schemes.md").read_text()
    assert "| OBABO | Gaussian R^2 |" in text and "ConstrainedHMC" in text
    assert (out / "bias.png").stat().st_size > 0
    assert main(["schemes", "--schemes", "BAXAB"]) == 2
