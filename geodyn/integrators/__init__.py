"""Dynamics on any manifold: splitting integrators, Riemannian SGD, constraint-aware wrappers.

Every integrator talks to manifolds only through the interface of
:class:`geodyn.manifolds.Manifold` (``shake``, ``rattle``, ``proj_tangent``,
``retract``, ``retr_transp``, ``transp``).
"""

from ._base import GeometricOptimizer, NonFiniteError
from ._portable import group_manifolds_kept, without_manifolds
from ._stacks import manifold_of
from .constrained import TANGENT_STATE_KEYS, Constrained
from .landing import Landing
from .overdamped import Overdamped
from .rsgd import RiemannianSGD
from .schemes import Program, compile_scheme
from .spectral import ManifoldMuon, Muon, MuonHyperball, Spel
from .splitting import Splitting

__all__ = [
    "TANGENT_STATE_KEYS",
    "Constrained",
    "GeometricOptimizer",
    "Landing",
    "ManifoldMuon",
    "Muon",
    "MuonHyperball",
    "NonFiniteError",
    "Overdamped",
    "Program",
    "RiemannianSGD",
    "Spel",
    "Splitting",
    "compile_scheme",
    "group_manifolds_kept",
    "manifold_of",
    "without_manifolds",
]
