"""Dynamics on any manifold: splitting integrators, Riemannian SGD, constraint-aware wrappers.

Every integrator talks to manifolds only through the interface of
:class:`geodyn.manifolds.Manifold` (``drift``, ``shake``, ``rattle``, ``proj_tangent``,
``retract``, ``retr_transp``, ``transp`` and the declared capabilities), and finds a
parameter's manifold only through :func:`manifold_of` / :func:`declared_manifold`.
"""

from ._base import GeometricOptimizer, NonFiniteError
from ._portable import group_manifolds_kept, without_manifolds
from ._stacks import declared_manifold, manifold_of
from .constrained import TANGENT_STATE_KEYS, Constrained
from .hmc import ConstrainedHMC
from .landing import Landing
from .overdamped import Overdamped
from .rsgd import RiemannianSGD
from .schemes import Program, compile_scheme
from .spectral import ManifoldMuon, MsignOptions, Muon, MuonHyperball, Spel
from .splitting import Splitting
from .wrapper import OptimizerWrapper

__all__ = [
    "TANGENT_STATE_KEYS",
    "Constrained",
    "ConstrainedHMC",
    "GeometricOptimizer",
    "Landing",
    "ManifoldMuon",
    "MsignOptions",
    "Muon",
    "MuonHyperball",
    "NonFiniteError",
    "OptimizerWrapper",
    "Overdamped",
    "Program",
    "RiemannianSGD",
    "Spel",
    "Splitting",
    "compile_scheme",
    "declared_manifold",
    "group_manifolds_kept",
    "manifold_of",
    "without_manifolds",
]
