"""Geometry only: constraint sets and their projections, retractions and SHAKE solves."""

from .base import ConvergenceError, Manifold, default_atol
from .circle_lift import CircleLift
from .complex import ComplexSphere, ComplexStiefel
from .euclidean import Euclidean
from .interop import GeooptAdapter, as_geodyn
from .lp_sphere import LpSphere
from .norm_ball import NormBall
from .orthogonalize import msign, polar_newton_schulz
from .product import Product
from .reshaped import Reshaped
from .sphere import NeuronSpheres, Oblique, Sphere
from .stiefel import Stiefel

__all__ = [
    "CircleLift",
    "ComplexSphere",
    "ComplexStiefel",
    "ConvergenceError",
    "Euclidean",
    "GeooptAdapter",
    "LpSphere",
    "Manifold",
    "NeuronSpheres",
    "NormBall",
    "Oblique",
    "Product",
    "Reshaped",
    "Sphere",
    "Stiefel",
    "as_geodyn",
    "default_atol",
    "msign",
    "polar_newton_schulz",
]
