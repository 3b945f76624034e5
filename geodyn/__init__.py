"""geodyn: weight constraints as Riemannian manifolds, and geometric integrators on them.

The public API, by room (each also importable from its subpackage):

* manifolds: ``Euclidean``, ``Sphere``, ``Oblique``, ``NeuronSpheres``, ``Stiefel``,
  ``LpSphere``, ``NormBall``, ``CircleLift``, ``Product``, ``Reshaped``, ``as_geodyn``, the
  base class ``Manifold`` and ``ConvergenceError``;
* integrators: ``Splitting``, ``Overdamped``, ``ConstrainedHMC``, ``RiemannianSGD``,
  ``Constrained``, ``OptimizerWrapper``, ``manifold_of``, ``declared_manifold``;
* constraints: ``constrain``, ``constrain_model``, the presets, ``residuals``, ``Implicit``;
* methods: ``Lawn``, ``OPT``, ``PathSGD``, ``PeriodicSampling``, ``path_norm``,
  ``hyperspherical_energy``, and the weight-constrained Langevin recipes.

``geodyn.testing`` (the law suite) needs hypothesis and is imported on its own.
"""

from .constraints import (
    Implicit,
    circle,
    constrain,
    constrain_model,
    lp_sphere,
    max_norm,
    orthogonal,
    residuals,
    unit_norm_neurons,
)
from .integrators import (
    Constrained,
    ConstrainedHMC,
    NonFiniteError,
    OptimizerWrapper,
    Overdamped,
    RiemannianSGD,
    Splitting,
    declared_manifold,
    manifold_of,
)
from .manifolds import (
    CircleLift,
    ConvergenceError,
    Euclidean,
    LpSphere,
    Manifold,
    NeuronSpheres,
    NormBall,
    Oblique,
    Product,
    Reshaped,
    Sphere,
    Stiefel,
    as_geodyn,
)
from .methods import (
    OPT,
    Lawn,
    PathSGD,
    PeriodicSampling,
    hyperspherical_energy,
    path_norm,
)

__version__ = "0.1.0"

__all__ = [
    "OPT",
    "CircleLift",
    "Constrained",
    "ConstrainedHMC",
    "ConvergenceError",
    "Euclidean",
    "Implicit",
    "Lawn",
    "LpSphere",
    "Manifold",
    "NeuronSpheres",
    "NonFiniteError",
    "NormBall",
    "Oblique",
    "OptimizerWrapper",
    "Overdamped",
    "PathSGD",
    "PeriodicSampling",
    "Product",
    "Reshaped",
    "RiemannianSGD",
    "Sphere",
    "Splitting",
    "Stiefel",
    "as_geodyn",
    "circle",
    "constrain",
    "constrain_model",
    "declared_manifold",
    "hyperspherical_energy",
    "lp_sphere",
    "manifold_of",
    "max_norm",
    "orthogonal",
    "path_norm",
    "residuals",
    "unit_norm_neurons",
]
