r"""Ready-made weight constraints for ``nn.Linear`` / ``nn.Conv*d`` layers.

Each preset constrains ``module.weight`` (biases stay free); conv kernels are seen as
the (out, in * kh * kw) matrix of neuron rows.

| preset | set |
|---|---|
| ``orthogonal`` | W^T W = I (tall) or W W^T = I (wide): Stiefel |
| ``unit_norm_neurons`` | every row \|w_i\|_2 = r: oblique |
| ``circle`` | every entry \|w_ij\| <= r through (q, xi), q^2 + xi^2 = r^2: circle lift |
| ``lp_sphere`` | every row \|w_i\|_p = r: Lp-sphere |
| ``max_norm`` | every row \|w_i\|_2 <= r: norm ball |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import geoopt
from torch import nn

from .. import manifolds
from .bind import Init, constrain
from .layers import select_layers

__all__ = [
    "PRESETS",
    "circle",
    "constrain_model",
    "lp_sphere",
    "max_norm",
    "orthogonal",
    "unit_norm_neurons",
]

def orthogonal(
    module: nn.Module, retraction: str = "qr", init: Init = "project"
) -> geoopt.ManifoldParameter:
    """W^T W = I (or W W^T = I for a wide W) on ``module.weight``; ``retraction`` of Stiefel."""
    return constrain(module, "weight", manifolds.Stiefel(retraction=retraction), init)


def unit_norm_neurons(
    module: nn.Module, radius: float = 1.0, init: Init = "project"
) -> geoopt.ManifoldParameter:
    """Every neuron's incoming weights on the sphere |w_i| = ``radius`` (oblique rows)."""
    return constrain(module, "weight", manifolds.Oblique(radius, dim=-1), init)


def circle(module: nn.Module, radius: float, init: Init = "project") -> geoopt.ManifoldParameter:
    """Every weight bounded, |w_ij| <= ``radius``, through the circle lift (q, xi)."""
    return constrain(module, "weight", manifolds.CircleLift(radius), init)


def lp_sphere(
    module: nn.Module, p: float, radius: float = 1.0, init: Init = "project"
) -> geoopt.ManifoldParameter:
    """Every neuron's incoming weights on the Lp sphere |w_i|_p = ``radius`` (p > 1)."""
    return constrain(module, "weight", manifolds.LpSphere(p, radius), init)


def max_norm(
    module: nn.Module, radius: float, init: Init = "project"
) -> geoopt.ManifoldParameter:
    """Every neuron's incoming weights in the ball |w_i| <= ``radius`` (max-norm)."""
    return constrain(module, "weight", manifolds.NormBall(radius), init)


PRESETS: dict[str, Callable[..., geoopt.ManifoldParameter]] = {
    "orthogonal": orthogonal,
    "unit_norm_neurons": unit_norm_neurons,
    "circle": circle,
    "lp_sphere": lp_sphere,
    "max_norm": max_norm,
}


def constrain_model(
    model: nn.Module,
    preset: str | Callable[..., geoopt.ManifoldParameter],
    exclude: Iterable[str | nn.Module] = (),
    **kwargs: Any,
) -> dict[str, geoopt.ManifoldParameter]:
    """Apply ``preset`` to every ``nn.Linear`` / ``nn.Conv{1,2,3}d`` layer of ``model``.

    Args:
        model: the network.
        preset: a name in :data:`PRESETS` or a callable ``preset(module, **kwargs)``.
        exclude: layers left free, given by qualified name (``"0"``, ``"features.conv1"``)
            or as the module itself (e.g. the first layer).
        **kwargs: passed to the preset (``radius=...``, ``p=...``, ``init=...``).

    Returns:
        The new manifold parameters by the layer's qualified name.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(
                f"preset must be one of {sorted(PRESETS)} or a callable, got {preset!r}"
            )
        preset = PRESETS[preset]
    layers = select_layers(model, exclude=exclude)
    return {name: preset(m, **kwargs) for name, m in layers}
