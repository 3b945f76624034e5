"""The benchmark cases: geodyn manifolds x geodyn optimizers, and the baselines.

A case builds, from a workload factory, a fresh model, an optimizer over all its
parameters (the hidden weights constrained) and a function giving the largest
constraint residual of the hidden weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .models import Workload
from .peers import (
    ADAM_LR,
    JOB_ROWS_ADAM,
    JOB_ROWS_SGD,
    JOB_STIEFEL_ADAM,
    JOB_STIEFEL_SGD,
    LR,
    MOMENTUM,
    Peer,
    floors,
    orthonormal_start,
    peers,
)

__all__ = ["GEODYN_OPTIMIZERS", "MANIFOLDS", "Built", "Case", "applicable", "baselines",
           "geodyn_cases"]

GAMMA = 1.0
TAU = 1e-4
STIEFEL_RETRACTIONS = ("qr", "polar", "cayley", "exp", "newton-schulz")

WorkloadFactory = Callable[[bool], Workload]  # lift -> a fresh workload
Residual = Callable[[], "float | None"]


@dataclass
class Built:
    """A case ready to step: ``optimizer`` has ``zero_grad(set_to_none)`` and ``step()``
    (a torch optimizer, a floor or a chain of optimizers)."""

    workload: Workload
    optimizer: Any
    residual: Residual


@dataclass
class Case:
    """One row of the table.

    ``family`` is "sphere", "stiefel" or "" (unconstrained); ``kind`` is "geodyn",
    "torch", "floor" or "peer"; ``job`` names what is done (peers doing the same job
    are compared); ``base`` is the torch optimizer the step time is divided by
    ("sgd" or "adam"); ``absent`` says why the case cannot run here (reported, not
    fatal).
    """

    name: str
    optimizer: str
    family: str
    build: Callable[[WorkloadFactory], Built]
    kind: str = "geodyn"
    note: str = ""
    job: str = ""
    base: str = "sgd"
    absent: str | None = None

    @property
    def baseline(self) -> bool:
        return self.kind != "geodyn"


def _max_residual(manifold, weights: list[Tensor]) -> Residual:  # noqa: ANN001
    def residual() -> float:
        with torch.no_grad():
            return max(float(manifold.residual(w.detach())) for w in weights)

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
    the compiled step on the row manifolds (their fast paths) and Stiefel qr."""
    if kind == "RSGD compiled":
        return manifold_name in ("Oblique rows", "CircleLift", "LpSphere p=3", "NormBall",
                                 "Stiefel qr")
    if manifold_name == "Stiefel newton-schulz":
        return kind in ("RSGD", "BAOAB")
    return kind == "BAOAB" or manifold_name != "Stiefel SHAKE"


def _geodyn_case(manifold_name: str, kind: str) -> Case:
    def build(make: WorkloadFactory) -> Built:
        spec = _manifolds()[manifold_name]
        wl = make(spec.lift)
        manifold = spec.make(wl)
        hidden = [layer.weight for layer in wl.hidden]
        with torch.no_grad():
            if spec.family == "stiefel":
                orthonormal_start(hidden)  # the peers' start too (and no SVD per case)
            for w in hidden:
                if spec.lift:
                    w.copy_(manifold.random_point(*w.shape, dtype=w.dtype, device=w.device))
                elif spec.family != "stiefel":
                    w.copy_(manifold.project(w))
        ids = {id(w) for w in hidden}
        rest = [p for p in wl.model.parameters() if id(p) not in ids]
        groups = [{"params": hidden, "manifold": manifold}, {"params": rest}]
        return Built(wl, _geodyn_optimizer(kind, groups, spec), _max_residual(manifold, hidden))

    stiefel = manifold_name.startswith("Stiefel")
    family = "stiefel" if stiefel else "sphere"
    adam = kind == "Constrained(Adam)"
    job = ""
    if kind != "BAOAB" and (stiefel or manifold_name == "Oblique rows"):
        job = {(True, True): JOB_STIEFEL_ADAM, (True, False): JOB_STIEFEL_SGD,
               (False, True): JOB_ROWS_ADAM, (False, False): JOB_ROWS_SGD}[stiefel, adam]
    return Case(f"{manifold_name} | {kind}", kind, family, build, job=job,
                base="adam" if adam else "sgd")


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

    base = "adam" if "Adam" in name else "sgd"
    return Case(name, name, "", build, kind="torch", base=base)


def _peer_case(peer: Peer, dtype: torch.dtype) -> Case:
    def build(make: WorkloadFactory) -> Built:
        wl = make(False)
        opt, residual = peer.build(wl)
        return Built(wl, opt, residual)

    family = "stiefel" if "orthonormal" in peer.job else "sphere"
    return Case(peer.name, peer.name, family, build, kind="peer", note=peer.note, job=peer.job,
                base="adam" if peer.adam else "sgd", absent=peer.absent(dtype))


def _floor_case(name: str, job: str, make_floor: Callable[[Workload], tuple]) -> Case:
    def build(make: WorkloadFactory) -> Built:
        wl = make(False)
        opt, residual = make_floor(wl)
        return Built(wl, opt, residual)

    family = "stiefel" if "orthonormal" in job else "sphere"
    return Case(name, "floor", family, build, kind="floor", job=job)


def baselines(dtype: torch.dtype = torch.float32) -> list[Case]:
    """torch SGD (the reference, first), torch Adam, the floors and every peer
    (absent where its library is missing or it does not run in ``dtype``)."""
    return [
        _torch_case(
            "torch SGD",
            lambda ps: torch.optim.SGD(ps, lr=LR, momentum=MOMENTUM, foreach=True),
        ),
        _torch_case("torch Adam", lambda ps: torch.optim.Adam(ps, lr=ADAM_LR, foreach=True)),
        *(_floor_case(name, job, make) for name, (job, make) in floors().items()),
        *(_peer_case(p, dtype) for p in peers()),
    ]
