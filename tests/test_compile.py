"""torch.compile with geodyn: a compiled model stepped by an eager integrator, compiled
manifold verbs, and a compiled functional Riemannian momentum step (docs/compile.md)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from doc_examples import run_python_blocks
from torch import nn

import geodyn
from benchmarks.bench_compile import riemannian_momentum_step
from geodyn.manifolds import Oblique, Sphere, Stiefel

STEPS = 8
# float32 forward/backward: the compiled kernels sum in another order, a few ulps per
# step; over STEPS steps of size <= 0.1 the parameters differ by far less than this.
ATOL32 = 1e-5


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    geodyn.unit_norm_neurons(model[0])
    return model


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(32, 8, generator=gen), torch.randint(0, 4, (32,), generator=gen)


def _optimizer(kind: str, model: nn.Module) -> torch.optim.Optimizer:
    if kind == "RiemannianSGD":
        return geodyn.RiemannianSGD(model.parameters(), lr=0.1, momentum=0.9)
    if kind == "BAOAB":
        return geodyn.Splitting(model.parameters(), lr=0.05, gamma=1.0, tau=1e-3, seed=0)
    return geodyn.Constrained(torch.optim.Adam(model.parameters(), lr=1e-2))


def _train(
    forward: nn.Module, opt: torch.optim.Optimizer, step: Callable[[], object] | None = None
) -> None:
    x, y = _batch()
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(forward(x), y).backward()
        (step or opt.step)()


@pytest.mark.parametrize("kind", ["RiemannianSGD", "BAOAB", "Constrained(Adam)"])
def test_compiled_model_with_eager_step_stays_on_manifold_and_matches_eager(kind):
    eager, compiled = _model(), _model()
    _train(eager, _optimizer(kind, eager))
    _train(torch.compile(compiled), _optimizer(kind, compiled))
    w = compiled[0].weight.detach()
    assert float(compiled[0].weight.manifold.residual(w)) < 1e-6
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=ATOL32), name
    assert not torch.equal(eager[0].weight, _model()[0].weight)  # it did train


def test_compiled_model_has_no_graph_break_on_constrained_parameters():
    explanation = torch._dynamo.explain(_model())(_batch()[0])
    assert explanation.graph_break_count == 0


ONE_GRAPH = [
    (Sphere(), (6, 5), "retract"),
    (Oblique(dim=-2), (3, 6, 5), "retract"),
    *((m, s, "proj_tangent") for m, s in [(Sphere(), (6, 5)), (Oblique(dim=-2), (3, 6, 5)),
                                          (Stiefel(), (7, 3))]),
]


@pytest.mark.parametrize(("manifold", "shape", "verb"), ONE_GRAPH, ids=str)
def test_manifold_verb_compiles_to_one_graph_and_matches_eager(manifold, shape, verb):
    gen = torch.Generator().manual_seed(2)
    x = manifold.random_point(*shape, dtype=torch.float64, generator=gen)
    v = 0.1 * manifold.random_tangent(x, generator=gen)
    fn = getattr(manifold, verb)
    compiled = torch.compile(fn, fullgraph=True, backend="eager")  # raises on a graph break
    assert torch.allclose(compiled(x, v), fn(x, v), rtol=0, atol=1e-14)


def test_compiled_functional_momentum_step_equals_riemannian_sgd():
    manifold = Oblique(dim=-1)
    gen = torch.Generator().manual_seed(3)
    x0 = manifold.random_point(12, 5, dtype=torch.float64, generator=gen)
    param = nn.Parameter(x0.clone())
    opt = geodyn.RiemannianSGD([{"params": [param], "manifold": manifold}], lr=0.1,
                               momentum=0.9)
    step = torch.compile(riemannian_momentum_step)
    x, buf = x0.clone(), torch.zeros_like(x0)
    for n in range(STEPS):
        lr = 0.1 if n < STEPS // 2 else 0.03  # a schedule: the step size changes mid-run
        opt.param_groups[0]["lr"] = lr
        g = torch.randn(x0.shape, dtype=torch.float64, generator=gen)
        param.grad = g.clone()
        opt.step()
        x, buf = step(manifold, x, buf, g, lr, 0.9)
    assert float(manifold.residual(x)) < 1e-14
    assert torch.allclose(x, param.detach(), rtol=0, atol=1e-13)
    # the stored buffer is tangent at the point before the step; moved, it is buf
    moved = manifold.proj_tangent(param.detach(), opt.state[param]["momentum_buffer"])
    assert torch.allclose(buf, moved, rtol=0, atol=1e-13)
    assert not torch.allclose(x, x0, atol=1e-3)


def _named_groups(model: nn.Module) -> list[dict]:
    w = model[0].weight
    rest = [model[0].bias, *model[2].parameters()]
    return [{"params": [w], "manifold": w.manifold}, {"params": rest}]


@pytest.mark.parametrize("groups", [_named_groups, lambda m: m.parameters()],
                         ids=["group-names-manifold", "bound-weight"])
def test_compiled_step_matches_eager(groups):

    eager, compiled = _model(), _model()
    opt_eager = geodyn.RiemannianSGD(groups(eager), lr=0.1, momentum=0.9)
    opt_compiled = geodyn.RiemannianSGD(groups(compiled), lr=0.1, momentum=0.9)
    _train(eager, opt_eager)
    _train(compiled, opt_compiled, torch.compile(opt_compiled.step, backend="aot_eager"))
    w = compiled[0].weight.detach()
    assert float(compiled[0].weight.manifold.residual(w)) < 1e-6
    for a, b in zip(eager.parameters(), compiled.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=ATOL32)


def test_docs_page_examples_run():
    page = pathlib.Path(__file__).parent.parent / "docs" / "compile.md"
    namespace = run_python_blocks(page)
    model = namespace["model"]
    assert max(geodyn.residuals(model).values()) < 1e-6


@pytest.mark.parametrize(
    ("manifold", "shape"),
    [
        (Oblique(dim=-1), (16, 6)),  # each with a fast path, compiled as one kernel
        (geodyn.LpSphere(3.0), (16, 6)),
        (geodyn.NormBall(1.0), (16, 6)),
        (geodyn.CircleLift(0.5), (16, 6, 2)),
        (Stiefel(), (6, 3)),  # its fast path, eagerly (fused_entrywise = False)
    ],
    ids=lambda v: str(v) if isinstance(v, geodyn.Manifold) else "",
)
def test_riemannian_sgd_compiled_equals_eager(
    manifold: geodyn.Manifold, shape: tuple[int, ...]
) -> None:
    gen = torch.Generator().manual_seed(5)
    x0 = manifold.random_point(*shape, dtype=torch.float64, generator=gen)
    grads = [torch.randn(x0.shape, dtype=torch.float64, generator=gen) for _ in range(STEPS)]
    params = {}
    for compiled in (False, True):
        p = nn.Parameter(x0.clone())
        opt = geodyn.RiemannianSGD([p], lr=0.1, momentum=0.9, manifold=manifold,
                                   compiled=compiled)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        params[compiled] = (p.detach(), opt.state[p]["momentum_buffer"])
    (x_eager, b_eager), (x_comp, b_comp) = params[False], params[True]
    assert float(manifold.residual(x_comp)) < 1e-13
    assert not torch.allclose(x_comp, x0, atol=1e-3)
    torch.testing.assert_close(x_comp, x_eager, rtol=0, atol=1e-12)
    torch.testing.assert_close(b_comp, b_eager, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("manifold", "shape"),
    [(Oblique(dim=-1), (5, 4)), (geodyn.NormBall(1.0), (5, 4)),
     (geodyn.CircleLift(0.5), (5, 4, 2))],
    ids=lambda v: str(v) if isinstance(v, geodyn.Manifold) else "",
)
@pytest.mark.parametrize("where", ["grad", "buffer", "param"])
def test_compiled_fast_path_never_commits_nonfinite_values(
    manifold: geodyn.Manifold, shape: tuple[int, ...], where: str
) -> None:
    gen = torch.Generator().manual_seed(3)
    param = nn.Parameter(manifold.random_point(*shape, dtype=torch.float64, generator=gen))
    opt = geodyn.RiemannianSGD([param], lr=0.1, momentum=0.9, manifold=manifold,
                               compiled=True)
    param.grad = torch.randn(param.shape, dtype=torch.float64, generator=gen)
    opt.step()
    param.grad = torch.randn(param.shape, dtype=torch.float64, generator=gen)
    target = {"grad": param.grad, "buffer": opt.state[param]["momentum_buffer"],
              "param": param.data}[where]
    target[2, 1] = float("nan")
    before = param.detach().clone(), opt.state[param]["momentum_buffer"].clone()
    with pytest.raises(geodyn.NonFiniteError):
        opt.step()
    torch.testing.assert_close(param.detach(), before[0], equal_nan=True)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], before[1], equal_nan=True)
