"""Every geodyn step as a pure function of tensors and hyperparameters.

Point, gradient and state in; new point and new state out; the manifold is an
argument, noise is passed in as a tensor, nothing is mutated. The functions compose
with ``torch.func.vmap`` (a batch of independent problems) and ``torch.compile``
where the manifold's verbs do (see docs/build-your-own-optimizer.md for the measured
status of each step); the ``torch.optim.Optimizer`` classes add parameters, state
dicts, seeded noise and all-or-nothing commits around them.
"""

from .landing import landing_field, landing_step, normal_attraction, point_residuals
from .overdamped import overdamped_step
from .rsgd import accumulate, rsgd_step
from .spectral import (
    adjusted_lr,
    hyperball_step,
    manifold_muon_step,
    muon_step,
    spectral_momentum,
    stiefel_spectral_direction,
)
from .splitting import drift, kick, ou_coefficients, retract_drift, thermostat

__all__ = [
    "accumulate",
    "adjusted_lr",
    "drift",
    "hyperball_step",
    "kick",
    "landing_field",
    "landing_step",
    "manifold_muon_step",
    "muon_step",
    "normal_attraction",
    "ou_coefficients",
    "overdamped_step",
    "point_residuals",
    "retract_drift",
    "rsgd_step",
    "spectral_momentum",
    "stiefel_spectral_direction",
    "thermostat",
]
