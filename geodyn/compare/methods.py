"""The method registry: a name -> a builder ``(model, config) -> (model, optimizer)``.

Each builder receives a freshly initialised model and the method's hyperparameters (its
defaults updated by the user's ``[method.NAME]`` table), binds whatever constraints the method
needs to the model's parameters, and returns the model with a ready optimizer. Constrained
parameters are recognised afterwards by their ``manifold`` attribute (a
``geoopt.ManifoldParameter``) or by a ``"manifold"`` entry in their optimizer's param group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Builder = Callable[[nn.Module, dict[str, Any]], tuple[nn.Module, torch.optim.Optimizer]]
Check = Callable[[dict[str, Any], int], None]


def _no_check(config: dict[str, Any], total_steps: int) -> None:
    """Every configuration fits every run length."""


@dataclass(frozen=True)
class Method:
    """A named training method with its default hyperparameters."""

    name: str
    summary: str
    build: Builder
    defaults: dict[str, Any] = field(default_factory=dict)
    check: Check = _no_check  # (config, total steps of the run): ValueError if they clash

    def config(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated by ``overrides``; an unknown key is a ValueError."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)} for method {self.name!r}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        return {**self.defaults, **overrides}


def _weights(model: nn.Module) -> Iterator[tuple[nn.Module, str]]:
    """(module, "weight") for every linear or convolutional layer, in order."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            yield module, "weight"


def _sgd(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"]
    )
    return model, opt


def _adam(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return model, opt


def _opt(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.opt import apply_opt

    apply_opt(model, cfg["variant"])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    return model, opt


def _pathsgd(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.pathsgd import PathSGD

    image_shape = getattr(model, "image_shape", None)
    input_shape = None if image_shape is None else (1, *image_shape)
    return model, PathSGD(
        model, lr=cfg["lr"], momentum=cfg["momentum"], input_shape=input_shape
    )


def _periodic(mode: Literal["pswa", "pwalks", "pswm"]) -> Builder:
    """PSWA / PWALKS / PSWM over SGD with momentum."""

    def build(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
        from geodyn.methods.periodic import PeriodicSampling

        base = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
        opt = PeriodicSampling(base, period=cfg["period"], interval=cfg["interval"], mode=mode,
                               start=cfg["start"], last_k=cfg.get("last_k"),
                               beta=cfg.get("beta", 0.9))
        return model, opt

    return build


def _hidden(model: nn.Module) -> list[nn.Module]:
    """Every Linear/Conv layer but the last (the classifier)."""
    return [module for module, _ in _weights(model)][:-1]


def _csgld(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.langevin import circle_model

    return circle_model(model, radii=cfg["radius"], lr=cfg["lr"], tau=cfg["tau"],
                        form="overdamped")


def _cbaoab_circle(
    model: nn.Module, cfg: dict[str, Any]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.langevin import circle_model

    return circle_model(model, radii=cfg["radius"], lr=cfg["lr"], gamma=cfg["gamma"],
                        tau=cfg["tau"])


def _cbaoab_orth(
    model: nn.Module, cfg: dict[str, Any]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.langevin import orthogonal_model

    return orthogonal_model(model, lr=cfg["lr"], momentum=cfg["momentum"], tau=cfg["tau"])


def _rsgd_oblique(
    model: nn.Module, cfg: dict[str, Any]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.constraints import unit_norm_neurons
    from geodyn.integrators import RiemannianSGD

    for layer in _hidden(model):
        unit_norm_neurons(layer, radius=cfg["radius"])
    return model, RiemannianSGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])


def _rsgd_lp(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.constraints import lp_sphere
    from geodyn.integrators import RiemannianSGD

    for layer in _hidden(model):
        lp_sphere(layer, p=cfg["p"], radius=cfg["radius"])
    return model, RiemannianSGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])


def _adam_stiefel(
    model: nn.Module, cfg: dict[str, Any]
) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.constraints import orthogonal
    from geodyn.integrators import Constrained

    for layer in _hidden(model):
        orthogonal(layer)
    return model, Constrained(torch.optim.Adam(model.parameters(), lr=cfg["lr"]))


def _lawn_adam(model: nn.Module, cfg: dict[str, Any]) -> tuple[nn.Module, torch.optim.Optimizer]:
    from geodyn.methods.lawn import Lawn

    base = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    return model, Lawn(base, model, warmup_steps=cfg["warmup_steps"], per=cfg["per"])


def _check_lawn(cfg: dict[str, Any], total_steps: int) -> None:
    """LAWN constrains nothing unless its warm-up ends before the run does."""
    if cfg["warmup_steps"] >= total_steps:
        raise ValueError(
            f"warmup_steps = {cfg['warmup_steps']} is not shorter than the run "
            f"({total_steps} steps): the run would be plain Adam with no constrained "
            f"parameter; set warmup_steps below {total_steps} (e.g. "
            f"{max(total_steps // 4, 0)}) in [method.lawn-adam], or raise --epochs"
        )


_ALL: list[Method] = [
    Method("sgd", "SGD with heavy-ball momentum (baseline)", _sgd,
           {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}),
    Method("adam", "Adam (baseline)", _adam, {"lr": 1e-3, "weight_decay": 0.0}),
    Method("opt", "OPT: hidden weights W = R V, V fixed random, R orthogonal (Cayley); SGD",
           _opt, {"lr": 0.05, "momentum": 0.9, "variant": "cayley"}),
    Method("pathsgd", "Path-SGD: steps preconditioned by the path-norm gammas (Sequential models)",
           _pathsgd, {"lr": 0.01, "momentum": 0.9}),
    Method("pswa", "PSWA: SGD whose weights are replaced by their periodic snapshot mean",
           _periodic("pswa"),
           {"lr": 0.05, "momentum": 0.9, "period": 44, "interval": 4, "start": 44}),
    Method("pwalks", "PWALKS: SGD whose weights are replaced by the mean of the period's last "
           "snapshots", _periodic("pwalks"),
           {"lr": 0.05, "momentum": 0.9, "period": 44, "interval": 4, "start": 44, "last_k": 5}),
    Method("pswm", "PSWM: SGD whose weights are replaced by an exponential moving average of "
           "the period's snapshots", _periodic("pswm"),
           {"lr": 0.05, "momentum": 0.9, "period": 44, "interval": 4, "start": 44, "beta": 0.9}),
    Method("csgld", "constrained overdamped Langevin (SHAKE-projected SGLD), every weight "
           "|w| <= r through the circle lift", _csgld,
           {"lr": 0.1, "tau": 1e-5, "radius": 0.5}),
    Method("cbaoab-circle", "constrained underdamped Langevin (BAOAB), every weight |w| <= r "
           "through the circle lift", _cbaoab_circle,
           {"lr": 0.3, "gamma": 1.0, "tau": 0.0, "radius": 0.5}),
    Method("cbaoab-orth", "constrained underdamped Langevin (BAOAB), orthogonal weights after "
           "the first layer", _cbaoab_orth, {"lr": 0.1, "momentum": 0.9, "tau": 0.0}),
    Method("rsgd-oblique", "Riemannian SGD with momentum, hidden neurons on unit spheres",
           _rsgd_oblique, {"lr": 0.05, "momentum": 0.9, "radius": 1.0}),
    Method("rsgd-lp", "Riemannian SGD with momentum, hidden neurons on Lp spheres |w_i|_p = r",
           _rsgd_lp, {"lr": 0.05, "momentum": 0.9, "radius": 1.0, "p": 3.0}),
    Method("adam-stiefel", "Adam made constraint-aware, orthogonal hidden weights",
           _adam_stiefel, {"lr": 1e-3}),
    Method("lawn-adam", "LAWN over Adam: free warm-up, then the classifier's neuron norms frozen",
           _lawn_adam, {"lr": 1e-3, "warmup_steps": 44, "per": "neuron"}, _check_lawn),
]

METHODS: dict[str, Method] = {m.name: m for m in _ALL}


def available_methods() -> list[str]:
    """The registered method names, in registry order."""
    return list(METHODS)


def get_method(name: str) -> Method:
    """The method ``name``; an unknown name is a ValueError listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}, or all")
    return METHODS[name]
