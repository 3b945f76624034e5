r"""Logit Attenuating Weight Normalization (Gupta et al., 2021, arXiv 2108.05839).

LAWN stacks onto any optimizer. For ``warmup_steps`` steps the base optimizer trains
unconstrained. At the switch the norms of the weights of the final homogeneous
sub-network (by default the last ``nn.Linear``) are frozen at their current values,

* ``per="neuron"``: every row (neuron) $w_i$ keeps $\|w_i\| = \rho_i$, its norm at the
  switch (conv kernels as (out, in * kh * kw) rows);
* ``per="layer"``: the whole weight keeps $\|W\|_F = \rho$,

and from then on each step is the constrained step of
:class:`geodyn.integrators.Constrained` on that product of spheres: the gradient is
replaced by its tangent part $g - w\,\langle w, g\rangle / \|w\|^2$, the base
optimizer steps, and the retraction $\rho\,(w + v)/\|w + v\|$ puts the weight back
on its sphere (momenta / first moments are moved to the new tangent space). Weight
decay is switched off on the constrained layers after the switch: the norm is fixed,
so a decay term would only fight the constraint.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import geoopt
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ..constraints.layers import select_layers
from ..integrators import Constrained
from ..integrators.wrapper import check_optimizer
from ..manifolds import Manifold, NeuronSpheres, Reshaped, Sphere

__all__ = ["Lawn"]

Per = Literal["neuron", "layer"]


def _norms(weight: Tensor, per: Per) -> Tensor:
    """The norms LAWN freezes: per row of the (out, fan_in) view, or of the whole weight."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    return rows.norm().reshape(1) if per == "layer" else rows.norm(dim=-1)


def _frozen(weight: Tensor, radii: Tensor, per: Per) -> Manifold:
    """The product of spheres that keeps ``weight``'s norms at ``radii``."""
    shape = tuple(weight.shape)
    if per == "layer":
        return Reshaped(Sphere(float(radii.reshape(()))), shape, (weight.numel(),))
    manifold = NeuronSpheres(radii)
    rows = (shape[0], math.prod(shape[1:]))
    return manifold if len(shape) == 2 else Reshaped(manifold, shape, rows)


def _radii(manifold: Manifold) -> Tensor:
    """The frozen norms; a Python float radius (``per="layer"``) kept exactly, in float64."""
    base = manifold.base if isinstance(manifold, Reshaped) else manifold
    radius = base.radius
    if not isinstance(radius, Tensor):
        radius = torch.tensor(float(radius), dtype=torch.float64)
    return radius.reshape(-1).clone()


class Lawn(Constrained):
    """LAWN around any optimizer: unconstrained warm-up, then frozen norms on chosen layers.

    A :class:`~geodyn.integrators.Constrained` whose chosen weights get their manifolds
    at the switch: before it their groups declare none, so the base steps them freely.

    On construction each chosen weight is moved into a param group of its own (a copy
    of its group's settings), so the base optimizer's groups are final before any LR
    scheduler is attached; its state is untouched.

    Args:
        optimizer: the base optimizer over ``model``'s parameters (SGD, Adam, AdamW, ...).
        model: the network.
        warmup_steps: unconstrained steps before the switch (0: constrained from the start).
        layers: the layers of the final homogeneous sub-network, as modules or qualified
            names; default: the last ``nn.Linear`` of ``model``. Their ``weight`` is
            constrained, biases stay free.
        per: ``"neuron"`` (every row keeps its norm) or ``"layer"`` (the Frobenius norm).
        put_back: how :class:`~geodyn.integrators.Constrained` returns to the spheres,
            "retract" or "project".
    """

    def __init__(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        warmup_steps: int,
        layers: Sequence[nn.Module | str] | None = None,
        per: Per = "neuron",
        put_back: str = "retract",
    ) -> None:
        check_optimizer(optimizer, "optimizer")
        super().__init__(optimizer, put_back=put_back)
        if per not in ("neuron", "layer"):
            raise ValueError(f"per must be 'neuron' or 'layer', got {per!r}")
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.per: Per = per
        self.warmup_steps = int(warmup_steps)
        self.weights = [_weight_of(m) for m in _select_layers(model, layers)]
        self.groups = [self._isolate(w) for w in self.weights]
        self.steps = 0
        self.switched = False

    def _isolate(self, weight: Tensor) -> dict[str, Any]:
        """Move ``weight`` into a param group of its own with its group's settings."""
        for group in self.param_groups:
            if any(p is weight for p in group["params"]):
                break
        else:
            raise ValueError(
                "a LAWN layer's weight is not among the optimizer's parameters; build the "
                "optimizer over model.parameters()"
            )
        if len(group["params"]) == 1:
            group.setdefault("manifold", None)
            return group
        group["params"] = [p for p in group["params"] if p is not weight]
        settings = {k: v for k, v in group.items() if k != "params"}
        self.add_param_group({**settings, "params": [weight], "manifold": None})
        return self.param_groups[-1]

    # ------------------------------------------------------------------ the method
    def switch(self) -> None:
        """Freeze the chosen weights' norms at their current values; weight decay off."""
        manifolds = [_frozen(w, _norms(w, self.per), self.per) for w in self.weights]
        self._constrain(manifolds)

    def _constrain(self, manifolds: Sequence[Manifold]) -> None:
        for group, manifold in zip(self.groups, manifolds, strict=True):
            group["manifold"] = manifold
            if "weight_decay" in group:
                group["weight_decay"] = 0.0
        self.switched = True

    @property
    def radii(self) -> list[Tensor]:
        """The frozen norms, one tensor per layer (empty before the switch)."""
        if not self.switched:
            return []
        return [_radii(g["manifold"]) for g in self.groups]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """A base step during warm-up; then a constrained step on the frozen norms."""
        if not self.switched and self.steps >= self.warmup_steps:
            self.switch()
        loss = super().step(closure)
        self.steps += 1
        return loss

    # ------------------------------------------------------------------ persistence
    def method_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "switched": self.switched, "radii": self.radii}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.groups = [_group_of(self, w) for w in self.weights]
        method = state_dict["method"]
        for group in self.groups:
            group["manifold"] = None
        self.switched = False
        if method["switched"]:
            manifolds = [
                _frozen(w, r.to(w.device, w.dtype), self.per)
                for w, r in zip(self.weights, method["radii"], strict=True)
            ]
            self._constrain(manifolds)
        self.steps = int(method["steps"])


def _group_of(optimizer: Optimizer, weight: Tensor) -> dict[str, Any]:
    for group in optimizer.param_groups:
        if len(group["params"]) == 1 and group["params"][0] is weight:
            return group
    raise ValueError(
        "the loaded state_dict does not keep each LAWN weight in a group of its own; "
        "load a state_dict saved by Lawn over the same model"
    )


def _select_layers(model: nn.Module, layers: Sequence[nn.Module | str] | None) -> list[nn.Module]:
    if layers is None:
        linear = select_layers(model, kinds=(nn.Linear,))
        if not linear:
            raise ValueError("model has no nn.Linear layer; pass layers=[...] explicitly")
        return [linear[-1][1]]
    chosen = [m for _, m in select_layers(model, layers)]
    if not chosen:
        raise ValueError("layers is empty; pass at least one layer (or None for the last Linear)")
    return chosen


def _weight_of(module: nn.Module) -> Tensor:
    weight = module._parameters.get("weight")
    if not isinstance(weight, nn.Parameter) or isinstance(weight, geoopt.ManifoldParameter):
        raise ValueError(
            f"{type(module).__name__} has no plain (unconstrained) 'weight' parameter for "
            "LAWN to constrain"
        )
    return weight
