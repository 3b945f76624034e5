"""Other libraries' constrained optimizers, and the Riemannian floors, as benchmark cases.

Every peer is optional: a library that cannot be imported gives a case reported as
absent (with the install line), never an error. Each case names the job it does
(``JOB_*``), so a geodyn case is compared with the fastest peer doing the same job.

The floors are the least work a correct constrained SGD step can do, written with
torch alone: torch SGD on the Riemannian gradient followed by one retraction,

* unit rows: g <- g - w <w, g> per row, SGD, w <- w / |w| per row;
* Stiefel (tall X): G <- G - X sym(X^T G), SGD, X <- X L^{-T} with L L^T = X^T X
  (one Cholesky-QR per matrix).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .measure import cholesky_qr, tall
from .models import Workload

__all__ = ["JOBS", "Chain", "Peer", "RowFloor", "StiefelFloor", "floors", "orthonormal_start",
           "orthonormality", "peers", "row_residual"]

LR = 1e-2
ADAM_LR = 1e-3
MOMENTUM = 0.9

JOB_ROWS_SGD = "unit rows, SGD"
JOB_ROWS_ADAM = "unit rows, Adam"
JOB_STIEFEL_SGD = "orthonormal, SGD"
JOB_STIEFEL_ADAM = "orthonormal, Adam"
JOBS = (JOB_ROWS_SGD, JOB_ROWS_ADAM, JOB_STIEFEL_SGD, JOB_STIEFEL_ADAM)

Residual = Callable[[], "float | None"]


class Chain:
    """Several optimizers stepped as one (a peer on the hidden weights, torch on the rest)."""

    def __init__(self, *optimizers: Any) -> None:
        self.optimizers = optimizers
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()


def _split(wl: Workload) -> tuple[list[Tensor], list[Tensor]]:
    hidden = [layer.weight for layer in wl.hidden]
    ids = {id(w) for w in hidden}
    return hidden, [p for p in wl.model.parameters() if id(p) not in ids]


def _torch_rest(rest: list[Tensor], adam: bool) -> torch.optim.Optimizer:
    if adam:
        return torch.optim.Adam(rest, lr=ADAM_LR, foreach=True)
    return torch.optim.SGD(rest, lr=LR, momentum=MOMENTUM, foreach=True)


# ----------------------------------------------------------------------------- residuals
def row_residual(weights: Callable[[], list[Tensor]]) -> Residual:
    """max | |row|^2 - 1 | / 2 over the hidden weights (the unit-sphere constraint)."""

    def residual() -> float:
        with torch.no_grad():
            return max(float(((w * w).sum(-1) - 1).abs().max() / 2) for w in weights())

    return residual


def orthonormality(weights: Callable[[], list[Tensor]]) -> Residual:
    """max |X^T X - I| over the hidden weights, taken in their tall orientation."""

    def residual() -> float:
        with torch.no_grad():
            out = 0.0
            for w in weights():
                x = tall(w.detach())
                eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
                out = max(out, float((x.mT @ x - eye).abs().max()))
            return out

    return residual


def _unit_rows(hidden: list[Tensor]) -> None:
    with torch.no_grad():
        for w in hidden:
            w.div_(w.norm(dim=-1, keepdim=True))


_FRAMES: dict[tuple, tuple[Tensor, Tensor]] = {}


def orthonormal_start(hidden: list[Tensor]) -> None:
    """Replace each weight by the Q factor of its tall orientation (diag R > 0), in place.

    Every orthonormal case of a run starts from the same weights (one seed), so the
    factor is computed once per weight and reused: an SVD- or eigh-based projection
    per case and matrix cost most of a quick run's set-up.
    """
    with torch.no_grad():
        for w in hidden:
            x = tall(w)
            key = (tuple(x.shape), x.dtype, x.device)
            cached = _FRAMES.get(key)
            if cached is None or not torch.equal(cached[0], x):
                q, r = torch.linalg.qr(x)
                sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
                cached = _FRAMES[key] = (x.clone(), q * sign)
            x.copy_(cached[1])


# ----------------------------------------------------------------------------- floors
class _Floor:
    """torch SGD over every parameter, the hidden ones' gradients projected before the
    step and their values retracted after it."""

    def __init__(self, wl: Workload) -> None:
        self.hidden, _ = _split(wl)
        self.sgd = torch.optim.SGD(wl.model.parameters(), lr=LR, momentum=MOMENTUM, foreach=True)
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for w in self.hidden:
            if w.grad is not None:
                self.project(w, w.grad)
        self.sgd.step()
        for w in self.hidden:
            self.retract(w)

    def project(self, w: Tensor, g: Tensor) -> None:
        raise NotImplementedError

    def retract(self, w: Tensor) -> None:
        raise NotImplementedError


class RowFloor(_Floor):
    """Unit rows: one row projection of the gradient and one row normalisation."""

    def project(self, w: Tensor, g: Tensor) -> None:
        g.sub_(w * (w * g).sum(-1, keepdim=True))

    def retract(self, w: Tensor) -> None:
        w.div_(torch.linalg.vector_norm(w, dim=-1, keepdim=True))


class StiefelFloor(_Floor):
    """Stiefel: the tangent projection X sym(X^T G) and one Cholesky-QR per matrix."""

    def project(self, w: Tensor, g: Tensor) -> None:
        x, gt = tall(w), tall(g)
        a = x.mT @ gt
        gt.sub_(x @ ((a + a.mT) / 2))

    def retract(self, w: Tensor) -> None:
        x = tall(w)
        x.copy_(cholesky_qr(x))


# ----------------------------------------------------------------------------- peers
def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class Peer:
    """How to build one peer on a workload: (optimizer, residual) or ImportError."""

    def __init__(
        self,
        name: str,
        job: str,
        module: str,
        install: str,
        build: Callable[[Workload], tuple[Any, Residual]],
        note: str = "",
        adam: bool = False,
        float32_only: bool = False,
    ) -> None:
        self.name, self.job, self.module, self.install = name, job, module, install
        self.build, self.note, self.adam, self.float32_only = build, note, adam, float32_only

    def absent(self, dtype: torch.dtype = torch.float32) -> str | None:
        """Why the peer cannot run here in ``dtype``, or None."""
        if not _available(self.module):
            return f"{self.module} is not importable ({self.install})"
        if self.float32_only and dtype != torch.float32:
            return f"{self.name} works in float32 only, not {dtype}"
        return None


def _geoopt(manifold: str, adam: bool) -> Callable[[Workload], tuple[Any, Residual]]:
    def build(wl: Workload) -> tuple[Any, Residual]:
        import geoopt

        m = getattr(geoopt, manifold)()
        hidden = []
        for layer in wl.hidden:
            w = layer.weight.detach()
            if manifold != "Sphere" and w.shape[0] < w.shape[1]:
                continue  # geoopt's Stiefel needs a tall matrix; wide ones stay Euclidean
            w = w.clone()
            if manifold == "Sphere":
                _unit_rows([w])
            else:
                orthonormal_start([w])
            layer.weight = geoopt.ManifoldParameter(w, manifold=m)
            hidden.append(layer.weight)
        params = wl.model.parameters()
        opt = (geoopt.optim.RiemannianAdam(params, lr=ADAM_LR) if adam else
               geoopt.optim.RiemannianSGD(params, lr=LR, momentum=MOMENTUM))
        check = row_residual if manifold == "Sphere" else orthonormality
        return opt, check(lambda: hidden)

    return build


def _geotorch(wl: Workload) -> tuple[Any, Residual]:
    import geotorch

    for layer in wl.hidden:
        geotorch.orthogonal(layer, "weight")
    opt = torch.optim.SGD(wl.model.parameters(), lr=LR, momentum=MOMENTUM, foreach=True)
    return opt, orthonormality(lambda: [layer.weight for layer in wl.hidden])


def _pogo(wl: Workload) -> tuple[Any, Residual]:
    import pogo
    import pogo.base

    hidden, rest = _split(wl)
    orthonormal_start(hidden)
    # POGO wants (batch, p, q) with p <= q: a tall weight is optimised transposed (rows=False)
    groups = [
        {"params": [w for w in hidden if w.shape[0] > w.shape[1]], "rows": False},
        {"params": [w for w in hidden if w.shape[0] <= w.shape[1]], "rows": True},
    ]
    opt = pogo.POGO(
        [g for g in groups if g["params"]], base_optimizer=pogo.base.SGD(momentum=MOMENTUM),
        lr=LR, flatten_fn=lambda x: x.unsqueeze(0),
    )
    return Chain(opt, _torch_rest(rest, adam=False)), orthonormality(lambda: hidden)


def _torch_muon(wl: Workload) -> tuple[Any, Residual]:
    hidden, rest = _split(wl)
    opt = torch.optim.Muon(hidden, lr=LR, weight_decay=0.0, momentum=0.95)
    return Chain(opt, _torch_rest(rest, adam=False)), lambda: None


def _oblique(adam: bool) -> Callable[[Workload], tuple[Any, Residual]]:
    def build(wl: Workload) -> tuple[Any, Residual]:
        from emerging_optimizers.riemannian_optimizers import ObliqueAdam, ObliqueSGD

        hidden, rest = _split(wl)
        _unit_rows(hidden)
        # dim=1: each row (a neuron's incoming weights) has unit norm
        opt = (ObliqueAdam(hidden, lr=ADAM_LR, dim=1) if adam else
               ObliqueSGD(hidden, lr=LR, momentum=MOMENTUM, dim=1))
        return Chain(opt, _torch_rest(rest, adam)), row_residual(lambda: hidden)

    return build


def _muon_hyperball(wl: Workload) -> tuple[Any, Residual]:
    from emerging_optimizers.orthogonalized_optimizers import MuonHyperball

    hidden, rest = _split(wl)
    radius = [float(w.detach().norm()) for w in hidden]
    opt = MuonHyperball(hidden, lr=LR, weight_decay=0.0, fp32_matmul_prec="highest")

    def residual() -> float:
        with torch.no_grad():
            return max(abs(float(w.norm()) / r - 1) for w, r in zip(hidden, radius, strict=True))

    return Chain(opt, _torch_rest(rest, adam=False)), residual


_EMERGING = "needs Python >= 3.12: see docs/benchmarks.md, make bench-peers"


def peers() -> list[Peer]:
    """Every peer case, importable or not."""
    return [
        Peer("geoopt RSGD Sphere", JOB_ROWS_SGD, "geoopt", "pip install geoopt",
             _geoopt("Sphere", adam=False)),
        Peer("emerging ObliqueSGD", JOB_ROWS_SGD, "emerging_optimizers", _EMERGING,
             _oblique(adam=False)),
        Peer("geoopt RAdam Sphere", JOB_ROWS_ADAM, "geoopt", "pip install geoopt",
             _geoopt("Sphere", adam=True), adam=True),
        Peer("emerging ObliqueAdam", JOB_ROWS_ADAM, "emerging_optimizers", _EMERGING,
             _oblique(adam=True), adam=True),
        Peer("geoopt RSGD EuclideanStiefel", JOB_STIEFEL_SGD, "geoopt", "pip install geoopt",
             _geoopt("EuclideanStiefel", adam=False), note="QR retraction; tall weights only"),
        Peer("geoopt RSGD CanonicalStiefel", JOB_STIEFEL_SGD, "geoopt", "pip install geoopt",
             _geoopt("CanonicalStiefel", adam=False), note="Cayley retraction; tall weights only"),
        Peer("geoopt RAdam EuclideanStiefel", JOB_STIEFEL_ADAM, "geoopt", "pip install geoopt",
             _geoopt("EuclideanStiefel", adam=True), note="tall weights only", adam=True),
        Peer("geotorch.orthogonal + SGD", JOB_STIEFEL_SGD, "geotorch",
             "pip install geotorch==0.4.0", _geotorch, note="parametrised"),
        Peer("pogo-torch POGO", JOB_STIEFEL_SGD, "pogo", "pip install pogo-torch", _pogo,
             note="landing, SGD-momentum base"),
        Peer("torch.optim.Muon", JOB_STIEFEL_SGD, "torch", "torch >= 2.9", _torch_muon,
             note="cost reference: orthogonalises the update only"),
        Peer("emerging MuonHyperball", JOB_STIEFEL_SGD, "emerging_optimizers", _EMERGING,
             _muon_hyperball, note="cost reference: Frobenius sphere, not orthonormal",
             float32_only=True),
    ]


def floors() -> dict[str, tuple[str, Callable[[Workload], tuple[Any, Residual]]]]:
    """The floor cases: name -> (job, build)."""

    def rows(wl: Workload) -> tuple[Any, Residual]:
        hidden, _ = _split(wl)
        _unit_rows(hidden)
        return RowFloor(wl), row_residual(lambda: hidden)

    def stiefel(wl: Workload) -> tuple[Any, Residual]:
        hidden, _ = _split(wl)
        orthonormal_start(hidden)
        return StiefelFloor(wl), orthonormality(lambda: hidden)

    return {
        "floor: SGD + row projection + normalise": (JOB_ROWS_SGD, rows),
        "floor: SGD + X sym(X^T G) + Cholesky-QR": (JOB_STIEFEL_SGD, stiefel),
    }
