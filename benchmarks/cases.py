"""The benchmark cases: geodyn manifolds x geodyn optimizers, and the baselines.

A case builds, from a workload factory, a fresh model, an optimizer over all its
parameters (the hidden weights constrained) and a function giving the largest
constraint residual of the hidden weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .measure import tall
from .models import Workload

__all__ = ["GEODYN_OPTIMIZERS", "MANIFOLDS", "Built", "Case", "applicable", "baselines",
           "geodyn_cases"]

LR = 1e-2
ADAM_LR = 1e-3
MOMENTUM = 0.9
GAMMA = 1.0
TAU = 1e-4
STIEFEL_RETRACTIONS = ("qr", "polar", "cayley", "exp")

WorkloadFactory = Callable[[bool], Workload]  # lift -> a fresh workload
Residual = Callable[[], float]


@dataclass
class Built:
    workload: Workload
    optimizer: torch.optim.Optimizer
    residual: Residual


@dataclass
class Case:
    """One row of the table. ``family`` is "sphere", "stiefel" or "" (unconstrained)."""

    name: str
    optimizer: str
    family: str
    build: Callable[[WorkloadFactory], Built]
    baseline: bool = False
    note: str = ""


def _max_residual(manifold, weights: list[Tensor]) -> Residual:  # noqa: ANN001
    def residual() -> float:
        with torch.no_grad():
            return max(float(manifold.residual(w.detach())) for w in weights)

    return residual


def _orthonormality(weights: Callable[[], list[Tensor]]) -> Residual:
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


def _row_sphere_residual(weights: list[Tensor]) -> Residual:
    """max | |row|^2 - 1 | / 2 over the hidden weights (the unit-sphere constraint)."""

    def residual() -> float:
        with torch.no_grad():
            return max(float(((w * w).sum(-1) - 1).abs().max() / 2) for w in weights)

    return residual


# ----------------------------------------------------------------------------- geodyn
@dataclass
class ManifoldSpec:
    """How to make a manifold for a workload's hidden weights, and integrator options."""

    make: Callable[[Workload], object]
    family: str
    lift: bool = False
    drift: str = "auto"  # the BAOAB drift: "auto", "shake" or "retract"


def _circle_radius(wl: Workload) -> float:
    # q = r cos(theta) with theta uniform has std r / sqrt(2): match a 1/sqrt(fan_in) init
    return math.sqrt(2.0 / wl.hidden[0].weight.shape[1])


def _manifolds() -> dict[str, ManifoldSpec]:
    import geodyn.manifolds as gm

    specs = {
        "Oblique rows": ManifoldSpec(lambda wl: gm.Oblique(dim=-1), "sphere"),
        "CircleLift": ManifoldSpec(
            lambda wl: gm.CircleLift(radius=_circle_radius(wl)), "sphere", lift=True
        ),
        "LpSphere p=3": ManifoldSpec(lambda wl: gm.LpSphere(3.0), "sphere"),
        "NormBall": ManifoldSpec(lambda wl: gm.NormBall(), "sphere"),
    }
    for r in STIEFEL_RETRACTIONS:
        specs[f"Stiefel {r}"] = ManifoldSpec(
            lambda wl, r=r: gm.Stiefel(retraction=r), "stiefel", drift="retract"
        )
    specs["Stiefel SHAKE"] = ManifoldSpec(
        lambda wl: gm.Stiefel(retraction="qr"), "stiefel", drift="shake"
    )
    return specs


MANIFOLDS: tuple[str, ...] = (
    "Oblique rows",
    "CircleLift",
    "LpSphere p=3",
    "NormBall",
    *(f"Stiefel {r}" for r in STIEFEL_RETRACTIONS),
    "Stiefel SHAKE",
)
GEODYN_OPTIMIZERS: tuple[str, ...] = ("RSGD", "RSGD compiled", "BAOAB", "Constrained(Adam)")


def _geodyn_optimizer(
    kind: str, groups: list[dict], spec: ManifoldSpec
) -> torch.optim.Optimizer:
    import geodyn.integrators as gi

    if kind in ("RSGD", "RSGD compiled"):
        return gi.RiemannianSGD(groups, lr=LR, momentum=MOMENTUM, compiled=kind != "RSGD")
    if kind == "BAOAB":
        gen = torch.Generator(device=groups[0]["params"][0].device).manual_seed(0)
        return gi.Splitting(
            groups, lr=LR, gamma=GAMMA, tau=TAU, scheme="BAOAB", drift=spec.drift, generator=gen
        )
    if kind == "Constrained(Adam)":
        return gi.Constrained(torch.optim.Adam(groups, lr=ADAM_LR, foreach=True))
    raise ValueError(f"unknown optimizer {kind!r}; choose from {GEODYN_OPTIMIZERS}")


def applicable(manifold_name: str, kind: str) -> bool:
    """Whether the pair is a case: a SHAKE drift exists only in the splitting integrators;
    the compiled step only where the manifold's transport is linear (the lazy momentum)."""
    if kind == "RSGD compiled":
        return manifold_name in ("Oblique rows", "LpSphere p=3", "Stiefel qr")
    return kind == "BAOAB" or manifold_name != "Stiefel SHAKE"


def _geodyn_case(manifold_name: str, kind: str) -> Case:
    def build(make: WorkloadFactory) -> Built:
        spec = _manifolds()[manifold_name]
        wl = make(spec.lift)
        manifold = spec.make(wl)
        hidden = [layer.weight for layer in wl.hidden]
        with torch.no_grad():
            for w in hidden:
                if spec.lift:
                    w.copy_(manifold.random_point(*w.shape, dtype=w.dtype, device=w.device))
                else:
                    w.copy_(manifold.project(w))
        ids = {id(w) for w in hidden}
        rest = [p for p in wl.model.parameters() if id(p) not in ids]
        groups = [{"params": hidden, "manifold": manifold}, {"params": rest}]
        return Built(wl, _geodyn_optimizer(kind, groups, spec), _max_residual(manifold, hidden))

    family = "stiefel" if manifold_name.startswith("Stiefel") else "sphere"
    return Case(f"{manifold_name} | {kind}", kind, family, build)


def geodyn_cases(manifolds: tuple[str, ...], optimizers: tuple[str, ...]) -> list[Case]:
    """Every manifold x optimizer combination asked for."""
    for name in manifolds:
        if name not in MANIFOLDS:
            raise ValueError(f"unknown manifold case {name!r}; choose from {MANIFOLDS}")
    return [_geodyn_case(m, o) for m in manifolds for o in optimizers if applicable(m, o)]


# ----------------------------------------------------------------------------- baselines
def _torch_case(name: str, make_opt: Callable[[list], torch.optim.Optimizer]) -> Case:
    def build(make: WorkloadFactory) -> Built:
        wl = make(False)
        return Built(wl, make_opt(list(wl.model.parameters())), lambda: 0.0)

    return Case(name, name, "", build, baseline=True)


def _geoopt_case(manifold: str) -> Case:
    def build(make: WorkloadFactory) -> Built:
        import geoopt

        wl = make(False)
        m = getattr(geoopt, manifold)()
        stiefel = "Stiefel" in manifold
        hidden = []
        for layer in wl.hidden:
            w = layer.weight.detach()
            if stiefel and w.shape[0] < w.shape[1]:
                continue  # geoopt's Stiefel needs a tall matrix; wide ones stay Euclidean
            with torch.no_grad():
                w = m.projx(w) if manifold != "Sphere" else w / w.norm(dim=-1, keepdim=True)
            layer.weight = geoopt.ManifoldParameter(w.clone(), manifold=m)
            hidden.append(layer.weight)
        opt = geoopt.optim.RiemannianSGD(wl.model.parameters(), lr=LR, momentum=MOMENTUM)
        if manifold == "Euclidean":
            residual: Residual = lambda: 0.0  # noqa: E731
        elif manifold == "Sphere":
            residual = _row_sphere_residual(hidden)
        else:
            residual = _orthonormality(lambda: hidden)
        return Built(wl, opt, residual)

    family = {"Euclidean": "", "Sphere": "sphere"}.get(manifold, "stiefel")
    note = "tall hidden weights only" if family == "stiefel" else ""
    return Case(f"geoopt RSGD {manifold}", "geoopt RSGD", family, build, True, note)


def _geotorch_case() -> Case:
    def build(make: WorkloadFactory) -> Built:
        import geotorch

        wl = make(False)
        for layer in wl.hidden:
            geotorch.orthogonal(layer, "weight")
        opt = torch.optim.SGD(wl.model.parameters(), lr=LR, momentum=MOMENTUM, foreach=True)
        return Built(wl, opt, _orthonormality(lambda: [layer.weight for layer in wl.hidden]))

    return Case("geotorch.orthogonal + SGD", "torch SGD", "stiefel", build, baseline=True)


def _geotorch_available() -> bool:
    try:
        import geotorch  # noqa: F401
    except ImportError:
        return False
    return True


def baselines() -> tuple[list[Case], list[str]]:
    """The baseline cases (torch SGD first: the reference) and notes on skipped ones."""
    cases = [
        _torch_case(
            "torch SGD",
            lambda ps: torch.optim.SGD(ps, lr=LR, momentum=MOMENTUM, foreach=True),
        ),
        _torch_case("torch Adam", lambda ps: torch.optim.Adam(ps, lr=ADAM_LR, foreach=True)),
        *(_geoopt_case(m) for m in ("Euclidean", "Sphere", "EuclideanStiefel", "CanonicalStiefel")),
    ]
    notes = []
    if _geotorch_available():
        cases.append(_geotorch_case())
    else:
        notes.append("geotorch is not importable: geotorch.orthogonal skipped "
                     "(pip install geotorch==0.4.0)")
    return cases, notes

