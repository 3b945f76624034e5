r"""Half-precision parameters: geometry in float32, one rounding per step.

A bfloat16/float16 parameter is gathered in float32, every manifold verb runs in float32
and the new point is rounded once into the parameter. Rounding a point x of M entrywise
to a dtype with unit roundoff u = eps/2 gives x̂ = x + δ with |δ_i| <= u |x_i|, hence

* spheres, oblique, norm ball, circle lift, c = (|x|^2 - r^2) / (2 r^2):
  |ĉ| <= ((1 + u)^2 (1 + 2a) - 1) / 2;
* Lp sphere, c = (||x||_p^p - r^p) / (p r^p): |ĉ| <= ((1 + u)^p (1 + p a) - 1) / p;
* Stiefel, c = X^T X - I: |X̂^T X̂ - I|_jk <= |x_j| |δ_k| + |δ_j| |x_k| + |δ_j| |δ_k| + a
  <= (1 + u)^2 (1 + a) - 1 (Cauchy-Schwarz on columns of norm <= sqrt(1 + a)),

with a = ``default_atol(float32)`` the residual of the float32 point before rounding.
Evaluating c in float32 adds at most (n + 2) eps_32 (a sum of n terms of total <= 1,
and one product and one subtraction). None of this depends on the number of steps.
"""

from __future__ import annotations

import copy
import math
import pathlib

import pytest
import torch
from doc_examples import run_python_blocks
from torch import nn

import geodyn
from geodyn.manifolds import default_atol

HALF = (torch.bfloat16, torch.float16)
EPS32 = torch.finfo(torch.float32).eps

# name -> (manifold, parameter shape, length n of the sums in c)
MANIFOLDS = {
    "Sphere": (geodyn.Sphere(), (64, 16), 16),
    "Oblique(dim=-2)": (geodyn.Oblique(dim=-2), (16, 64), 16),
    "Stiefel": (geodyn.Stiefel("qr"), (32, 12, 3), 12),
    "LpSphere(3)": (geodyn.LpSphere(3.0), (64, 16), 16),
    "NormBall": (geodyn.NormBall(1.0), (64, 16), 16),
    "CircleLift(0.5)": (geodyn.CircleLift(0.5), (64, 8, 2), 2),
}


def adam_eps(dtype: torch.dtype) -> float:
    """Adam's eps, raised to the dtype's smallest normal number (1e-8 is 0 in float16)."""
    return max(1e-8, torch.finfo(dtype).tiny)


# name -> optimizer factory. RiemannianSGD and Constrained retract (Stiefel: QR);
# Splitting and Overdamped drift by SHAKE (the circle lift: its exact rotation).
INTEGRATORS = {
    "RiemannianSGD": lambda ps, m, dt: geodyn.RiemannianSGD(
        [{"params": ps, "manifold": m}], lr=0.05, momentum=0.9
    ),
    "Splitting(BAOAB)": lambda ps, m, dt: geodyn.Splitting(
        [{"params": ps, "manifold": m}], lr=0.05, gamma=1.0, tau=1e-3, scheme="BAOAB", seed=3
    ),
    "Overdamped": lambda ps, m, dt: geodyn.Overdamped(
        [{"params": ps, "manifold": m}], lr=0.05, tau=1e-3, seed=3
    ),
    "Constrained(Adam)": lambda ps, m, dt: geodyn.Constrained(
        torch.optim.Adam([{"params": ps, "manifold": m}], lr=1e-2, eps=adam_eps(dt))
    ),
}

CASES = [(dt, m, i) for dt in HALF for m in MANIFOLDS for i in INTEGRATORS]
IDS = [f"{str(dt)[6:]}-{m}-{i}" for dt, m, i in CASES]


def rounding_bound(manifold: geodyn.Manifold, dtype: torch.dtype, n: int) -> float:
    """Largest |c| of a float32 point of M rounded once to ``dtype`` (module docstring)."""
    u = torch.finfo(dtype).eps / 2
    a = default_atol(torch.float32)
    if isinstance(manifold, geodyn.Stiefel):
        rounded = (1 + u) ** 2 * (1 + a) - 1
    else:
        p = manifold.p if isinstance(manifold, geodyn.LpSphere) else 2.0
        rounded = ((1 + u) ** p * (1 + p * a) - 1) / p
    return rounded + (n + 2) * EPS32


def residual_samples(manifold: geodyn.Manifold, x: torch.Tensor) -> torch.Tensor:
    """|c| of the half-precision ``x``, computed in float32: one sample per independent
    constraint (per entry of c; per point for Stiefel, whose entries share columns)."""
    c = manifold.constraint(x.detach().float())
    c = c.clamp(min=0) if manifold.is_inequality else c.abs()
    return c.amax(dim=-1) if isinstance(manifold, geodyn.Stiefel) else c.flatten()


def half_ulp(actual: torch.Tensor, reference: torch.Tensor) -> None:
    """``actual`` (half precision) is ``reference`` (float32) rounded to nearest:
    |actual - reference| <= u |reference|, or half the subnormal spacing."""
    info = torch.finfo(actual.dtype)
    u = info.eps / 2
    err = (actual.float() - reference).abs()
    allowed = u * reference.abs() + info.tiny * info.eps / 2
    assert bool((err <= allowed).all()), float((err - allowed).max())


def start(name: str, dtype: torch.dtype, seed: int) -> tuple[geodyn.Manifold, nn.Parameter]:
    manifold, shape, _ = MANIFOLDS[name]
    g = torch.Generator().manual_seed(seed)
    return manifold, nn.Parameter(manifold.random_point(*shape, generator=g).to(dtype))


def tensor_state(opt: torch.optim.Optimizer, p: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(("dtype", "mname", "iname"), CASES, ids=IDS)
def test_residual_stays_at_one_rounding(dtype, mname, iname):
    manifold, x = start(mname, dtype, seed=0)
    opt = INTEGRATORS[iname]([x], manifold, dtype)
    g = torch.Generator().manual_seed(1)
    bound = rounding_bound(manifold, dtype, MANIFOLDS[mname][2])
    seen = {}
    for k in range(1, 101):
        x.grad = torch.randn(x.shape, generator=g).to(dtype)
        opt.step()
        if k in (10, 100):
            seen[k] = residual_samples(manifold, x)
    assert x.dtype == dtype
    assert bool(torch.isfinite(x).all())
    state = tensor_state(opt, x)
    for key, value in state.items():
        if value.shape == x.shape:  # per-entry state (momenta, moments); Adam's step is a count
            assert value.dtype == dtype, key
            assert bool(torch.isfinite(value).all()), key
    if iname != "Overdamped":
        assert state, "the integrator keeps per-parameter state"
    early, late = seen[10], seen[100]
    assert float(early.max()) <= bound
    assert float(late.max()) <= bound
    # no growth: the mean residual at step 100 is the one at step 10 up to 4 standard
    # errors of the difference of two means of N samples (two-sided p ~ 6e-5)
    se = math.sqrt((float(early.var()) + float(late.var())) / early.numel())
    assert float(late.mean()) <= float(early.mean()) + 4 * se


def copy_state(src: dict, dtype: torch.dtype) -> dict:
    return {
        k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() else v
        for k, v in src.items()
    }


@pytest.mark.parametrize(("dtype", "mname", "iname"), CASES, ids=IDS)
def test_half_step_is_float32_step_rounded(dtype, mname, iname):
    manifold, x = start(mname, dtype, seed=4)
    opt = INTEGRATORS[iname]([x], manifold, dtype)
    g = torch.Generator().manual_seed(5)
    for _ in range(5):  # build up state (momenta, Adam moments, Splitting's pending kick)
        x.grad = torch.randn(x.shape, generator=g).to(dtype)
        opt.step()
    grad = torch.randn(x.shape, generator=g).to(dtype)
    x_old = x.detach().float()
    if iname == "Constrained(Adam)":
        x_ref, state_ref = constrained_reference(opt, manifold, x, grad)
    else:
        x32 = nn.Parameter(x_old.clone())
        opt32 = INTEGRATORS[iname]([x32], manifold, torch.float32)
        opt32.state[x32] = copy_state(opt.state[x], torch.float32)
        opt32.generator.set_state(opt.generator.get_state())
        x32.grad = grad.float()
        opt32.step()
        x_ref, state_ref = x32.detach(), tensor_state(opt32, x32)
    x.grad = grad
    opt.step()
    half_ulp(x.detach(), x_ref)
    for key, value in tensor_state(opt, x).items():
        if value.shape == x.shape:
            half_ulp(value, state_ref[key])


def constrained_reference(opt, manifold, x, grad):
    """The Constrained step written out: Riemannian gradient in float32, the base step in
    the parameter's dtype, put back and moment transport in float32."""
    x_old = x.detach().float()
    xb = nn.Parameter(x.detach().clone())
    base = torch.optim.Adam([xb], lr=1e-2, eps=adam_eps(x.dtype))
    base.load_state_dict(copy.deepcopy(opt.base.state_dict()))
    xb.grad = manifold.proj_tangent(x_old, grad.float()).to(x.dtype)
    base.step()
    x_new = manifold.retract(x_old, manifold.proj_tangent(x_old, xb.detach().float() - x_old))
    state = {
        "exp_avg": manifold.transp(x_old, x_new, base.state[xb]["exp_avg"].float()),
        "exp_avg_sq": base.state[xb]["exp_avg_sq"].float(),
    }
    return x_new, state


@pytest.mark.parametrize("iname", list(INTEGRATORS))
def test_step_inside_autocast_equals_step_outside(iname):
    manifold, shape, _ = MANIFOLDS["Stiefel"]
    runs = []
    for inside in (False, True):
        g = torch.Generator().manual_seed(6)
        x = nn.Parameter(manifold.random_point(*shape, generator=g))
        opt = INTEGRATORS[iname]([x], manifold, torch.float32)
        for _ in range(5):
            x.grad = torch.randn(x.shape, generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=inside):
                opt.step()
        runs.append(x.detach())
    torch.testing.assert_close(runs[1], runs[0], rtol=0, atol=0)


def test_autocast_bf16_trains_on_manifolds():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32),
        nn.Tanh(),
        nn.Linear(32, 32),
        nn.Tanh(),
        nn.Linear(32, 32),
        nn.Tanh(),
        nn.Linear(32, 16),
        nn.Tanh(),
        nn.Linear(16, 2),
    )
    geodyn.orthogonal(model[0])
    geodyn.unit_norm_neurons(model[2])
    geodyn.lp_sphere(model[4], p=3.0)
    geodyn.circle(model[6], radius=0.5)
    geodyn.max_norm(model[8], radius=2.0)
    inputs = torch.randn(256, 8, generator=g)
    targets = torch.sin(inputs[:, :2] * 2) + inputs[:, 2:4] * inputs[:, 4:6]
    opt = geodyn.RiemannianSGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(inputs)
            assert out.dtype == torch.bfloat16
            loss = nn.functional.mse_loss(out.float(), targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < sum(losses[:5])
    for p in model.parameters():
        assert p.dtype == torch.float32
    residuals = geodyn.residuals(model)
    assert len(residuals) == 5
    for name, res in residuals.items():
        assert res <= default_atol(torch.float32), name


def test_docs_page_examples_run():
    page = pathlib.Path(__file__).parents[1] / "docs" / "mixed-precision.md"
    run_python_blocks(page, min_blocks=1)


def test_residuals_benchmark_reports_half_precision_below_one_rounding():
    from benchmarks.residuals_dtype import DTYPES, INTEGRATORS, MANIFOLDS, table

    lines = table(rows=8, cols=4, steps=3, log=lambda _: None)
    rows = [line for line in lines[2:] if not line.startswith("| one rounding")]
    assert len(rows) == len(MANIFOLDS) * len(INTEGRATORS)
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        worst = dict(zip(DTYPES, map(float, cells[2:]), strict=True))
        for dtype in HALF:
            u = torch.finfo(dtype).eps / 2
            one = 2 * u + u * u if cells[0] == "Stiefel" else u + u * u / 2
            assert worst[dtype] <= one + default_atol(torch.float32), line
        assert all(math.isfinite(v) for v in worst.values())
