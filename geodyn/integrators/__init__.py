"""Dynamics on any manifold: splitting integrators, Riemannian SGD, constraint-aware wrappers.

Every integrator talks to manifolds only through the interface of
:class:`geodyn.manifolds.Manifold` (``shake``, ``rattle``, ``proj_tangent``,
``retract``, ``retr_transp``, ``transp``).
"""

from ._base import GeometricOptimizer, NonFiniteError
from ._portable import group_manifolds_kept, without_manifolds
from ._stacks import manifold_of
from .constrained import TANGENT_STATE_KEYS, Constrained
from .hmc import ConstrainedHMC
from .overdamped import Overdamped
from .rsgd import RiemannianSGD
from .schemes import Program, compile_scheme
from .splitting import Splitting

__all__ = [
    "TANGENT_STATE_KEYS",
    "Constrained",
    "ConstrainedHMC",
    "GeometricOptimizer",
    "NonFiniteError",
    "Overdamped",
    "Program",
    "RiemannianSGD",
    "Splitting",
    "compile_scheme",
    "group_manifolds_kept",
    "manifold_of",
    "without_manifolds",
]
