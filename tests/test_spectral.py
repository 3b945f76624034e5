"""Spectral-norm steepest descent: Muon equals torch.optim.Muon in flat space; Spel and
manifold Muon stay on Stiefel; the hyperball form keeps each weight's norm."""

from __future__ import annotations

import pytest
import torch

import geodyn.functional as F
from geodyn import ManifoldMuon, Muon, MuonHyperball, Spel
from geodyn.manifolds import Sphere, Stiefel, msign

STEPS = 10


def _loss(params, seed=0):
    gen = torch.Generator().manual_seed(seed)
    targets = [torch.randn(p.shape, generator=gen) for p in params]
    pairs = list(zip(params, targets, strict=True))
    return lambda: sum(((p - t) ** 2).sum() + 0.1 * (p**4).sum() for p, t in pairs)


def _trajectory(opt, params, loss, n=STEPS):
    out = []
    for _ in range(n):
        opt.zero_grad()
        loss().backward()
        opt.step()
        out.append([p.detach().clone() for p in params])
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # torch's defaults: lr 1e-3, weight decay 0.1, momentum 0.95, Nesterov
        dict(lr=0.02, weight_decay=0.0, momentum=0.9, nesterov=False),
        dict(lr=0.01, weight_decay=0.05, adjust_lr_fn="match_rms_adamw", ns_steps=3),
        dict(lr=0.01, ns_coefficients=(2.0, -1.5, 0.5)),
    ],
)
def test_flat_muon_equals_torch_muon(kw):
    gen = torch.Generator().manual_seed(1)
    init = [torch.randn(12, 5, generator=gen), torch.randn(5, 12, generator=gen),
            torch.randn(12, 5, generator=gen)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    torch_kw = dict(kw)
    if "ns_coefficients" not in torch_kw:
        torch_kw["ns_coefficients"] = (3.4445, -4.7750, 2.0315)
    a = _trajectory(Muon(ours, **kw), ours, _loss(ours))
    b = _trajectory(torch.optim.Muon(ref, **torch_kw), ref, _loss(ref))
    worst = 0.0
    for step_a, step_b in zip(a, b, strict=True):
        for pa, pb in zip(step_a, step_b, strict=True):
            worst = max(worst, float((pa - pb).abs().max() / pb.abs().max()))
    # float32 rounding of the final add (fused or not) is all that differs
    assert worst < 1e-6, worst


def test_muon_keeps_its_state_tensors_and_refuses_vectors():
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = Muon([w], lr=0.01)
    w.grad = torch.randn(4, 3)
    opt.step()
    assert opt.state[w]["momentum_buffer"].shape == (4, 3)
    with pytest.raises(ValueError, match="matrices"):
        Muon([torch.nn.Parameter(torch.randn(4))])
    with pytest.raises(ValueError, match="weight_decay"):
        Muon([w], weight_decay=0.1, manifold=Stiefel())
    with pytest.raises(ValueError, match="momentum"):
        Muon([w], momentum=1.0)


def _orthonormal(shape, seed=0):
    return Stiefel().random_point(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(16, 6), (6, 16), (3, 8, 8)])
def test_spel_stays_on_stiefel_and_descends(shape):
    w = torch.nn.Parameter(_orthonormal(shape))
    gen = torch.Generator().manual_seed(3)
    target = torch.randn(shape, generator=gen)

    def loss():
        return ((w - target) ** 2).sum()

    opt = Spel([w], lr=0.05, momentum=0.5)
    first = float(loss().detach())
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(Stiefel().residual(w.detach())) < 1e-6
    assert float(loss().detach()) < first
    # the Spel form: polar(x - a msign(P_x g)) with the projected Nesterov momentum
    x = w.detach().clone()
    opt.zero_grad()
    loss().backward()
    buf = opt.state[w]["momentum_buffer"].clone()
    u, _ = F.spectral_momentum(Stiefel(), x, w.grad, buf, momentum=0.5, nesterov=True)
    a = F.adjusted_lr(0.05, shape)
    expected = Stiefel("polar").retract(x, -a * msign(u))  # polar(x + v) for any v
    opt.step()
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-5)


def test_spectral_direction_square_closed_form():
    # square W: the answer is -W msign(skew(W^T G))
    gen = torch.Generator().manual_seed(4)
    w = Stiefel().random_point(6, 6, dtype=torch.float64, generator=gen)
    g = torch.randn(6, 6, dtype=torch.float64, generator=gen)
    a = F.stiefel_spectral_direction(w, g)
    skew = 0.5 * (w.mT @ g - g.mT @ w)
    u, _, vh = torch.linalg.svd(skew)
    torch.testing.assert_close(a, -w @ (u @ vh), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(12, 4), (20, 8), (2, 9, 3)])
def test_spectral_direction_is_tangent_unit_and_optimal(shape):
    gen = torch.Generator().manual_seed(5)
    w = Stiefel().random_point(*shape, dtype=torch.float64, generator=gen)
    g = torch.randn(shape, dtype=torch.float64, generator=gen)
    a = F.stiefel_spectral_direction(w, g)
    sym = 0.5 * (w.mT @ a + a.mT @ w)
    assert float(sym.abs().max()) < 1e-12
    torch.testing.assert_close(
        torch.linalg.matrix_norm(a, ord=2), torch.ones(shape[:-2], dtype=torch.float64)
    )
    # optimality against feasible competitors: normalised tangent projections of -g
    # and of -msign(g) (any tangent B with |B|_2 <= 1 has <G, B> >= <G, A>)
    value = (g * a).sum((-2, -1))
    for cand in (-g, -msign(g, "cubic", 60, dtype=None)):
        b = Stiefel().proj_tangent(w, cand)
        b = b / torch.linalg.matrix_norm(b, ord=2, keepdim=True)
        assert bool(((g * b).sum((-2, -1)) >= value - 1e-10).all())
    # and 300 random tangent directions
    for _ in range(300):
        b = Stiefel().random_tangent(w, generator=gen)
        b = b / torch.linalg.matrix_norm(b, ord=2, keepdim=True)
        assert bool(((g * b).sum((-2, -1)) >= value - 1e-10).all())


def test_manifold_muon_stays_on_stiefel_and_descends():
    w = torch.nn.Parameter(_orthonormal((10, 4)).double())
    target = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def loss():
        return ((w - target) ** 2).sum()

    opt = ManifoldMuon([w], lr=0.05, momentum=0.0, nesterov=False)
    first = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(Stiefel().residual(w.detach())) < 1e-12
    assert float(loss().detach()) < first
    with pytest.raises(ValueError, match="Stiefel"):
        ManifoldMuon([w], manifold=Sphere())


def test_hyperball_keeps_each_norm_and_is_the_sphere_retraction():
    gen = torch.Generator().manual_seed(7)
    a = torch.nn.Parameter(torch.randn(8, 5, generator=gen) * 3)
    b = torch.nn.Parameter(torch.randn(8, 5, generator=gen))
    norms = [float(a.norm()), float(b.norm())]
    opt = MuonHyperball([a, b], lr=0.1, momentum=0.9)
    loss = _loss([a, b])
    for _ in range(5):
        opt.zero_grad()
        loss().backward()
        opt.step()
    for p, r in zip([a, b], norms, strict=True):
        assert abs(float(p.norm()) - r) < 1e-5 * r
    # one more step equals Sphere(R).retract(x, -lr R O / |O|) on the flattened matrix
    x = a.detach().clone()
    opt.zero_grad()
    loss().backward()
    u, _ = F.spectral_momentum(None, x, a.grad, opt.state[a]["momentum_buffer"],
                               momentum=0.9, nesterov=True)
    o = msign(u)
    expected = Sphere(norms[0]).retract(x.flatten(), -0.1 * norms[0] * (o / o.norm()).flatten())
    opt.step()
    torch.testing.assert_close(a.detach().flatten(), expected, rtol=1e-6, atol=1e-6)
    r = MuonHyperball([torch.nn.Parameter(torch.randn(3, 3))], radius=2.0)
    assert abs(float(r.param_groups[0]["params"][0].norm()) - 2.0) < 1e-6
    with pytest.raises(ValueError, match="nonzero norm"):
        MuonHyperball([torch.nn.Parameter(torch.zeros(3, 3))])


def test_hyperball_and_spel_take_muons_keyword_defaults():
    """MuonHyperball and Spel take Muon's msign keywords, with Muon's own defaults."""
    import inspect

    muon = inspect.signature(Muon).parameters
    w = torch.nn.Parameter(torch.randn(3, 3))
    for opt in (MuonHyperball([w]), Spel([torch.nn.Parameter(torch.linalg.qr(w)[0].detach())])):
        group = opt.param_groups[0]
        for key in ("momentum", "nesterov", "ns_coefficients", "eps", "ns_steps"):
            assert group[key] == muon[key].default, key
        assert opt.msign_dtype == muon["msign_dtype"].default
        assert opt.nonfinite == muon["nonfinite"].default
    given = MuonHyperball([w], momentum=0.5, ns_steps=3, msign_dtype=None)
    assert given.param_groups[0]["momentum"] == 0.5 and given.param_groups[0]["ns_steps"] == 3
    assert given.msign_dtype is None
    with pytest.raises(TypeError, match="weight_decay"):
        MuonHyperball([w], weight_decay=0.1)  # type: ignore[call-arg]
