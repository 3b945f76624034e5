"""The network face: manifolds bound to nn.Module parameters, presets, user-defined constraints."""

from .bind import constrain, constrained_parameters, is_lifted, residuals
from .implicit import Implicit
from .presets import (
    PRESETS,
    circle,
    constrain_model,
    lp_sphere,
    max_norm,
    orthogonal,
    unit_norm_neurons,
)

__all__ = [
    "PRESETS",
    "Implicit",
    "circle",
    "constrain",
    "constrain_model",
    "constrained_parameters",
    "is_lifted",
    "lp_sphere",
    "max_norm",
    "orthogonal",
    "residuals",
    "unit_norm_neurons",
]
