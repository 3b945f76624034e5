"""geodyn: weight constraints as Riemannian manifolds, and geometric integrators on them.

The public API, by room (each also importable from its subpackage):

* manifolds: ``Euclidean``, ``Sphere``, ``Oblique``, ``NeuronSpheres``, ``Stiefel``,
  ``LpSphere``, ``NormBall``, ``CircleLift``, ``Product``, ``Reshaped``, ``as_geodyn``, the
  base class ``Manifold`` and ``ConvergenceError``;
* manifolds also: ``ComplexStiefel``, ``ComplexSphere``, and the orthogonalisation
  primitives ``polar_newton_schulz`` and ``msign``;
* integrators: ``Splitting``, ``Overdamped``, ``ConstrainedHMC``, ``RiemannianSGD``,
  ``Constrained``, ``OptimizerWrapper``, ``manifold_of``, ``declared_manifold``,
  and the optimizer-author toolkit ``Muon``, ``Spel``, ``ManifoldMuon``, ``MuonHyperball``,
  ``Landing`` (each a loop around a pure step of ``geodyn.functional``);
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
    Landing,
    ManifoldMuon,
    Muon,
    MuonHyperball,
    NonFiniteError,
    OptimizerWrapper,
    Overdamped,
    RiemannianSGD,
    Spel,
    Splitting,
    declared_manifold,
    manifold_of,
)
from .manifolds import (
    CircleLift,
    ComplexSphere,
    ComplexStiefel,
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
    msign,
    polar_newton_schulz,
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
    "ComplexSphere",
    "ComplexStiefel",
    "Constrained",
    "ConstrainedHMC",
    "ConvergenceError",
    "Euclidean",
    "Implicit",
    "Landing",
    "Lawn",
    "LpSphere",
    "Manifold",
    "NeuronSpheres",
    "ManifoldMuon",
    "Muon",
    "MuonHyperball",
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
    "Spel",
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
    "msign",
    "orthogonal",
    "path_norm",
    "polar_newton_schulz",
    "residuals",
    "unit_norm_neurons",
]
