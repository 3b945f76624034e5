r"""geoopt manifolds as geodyn manifolds.

geoopt's Euclidean, Sphere and Stiefel map to their geodyn counterparts.
geodyn's Stiefel uses the embedded (Euclidean) metric, so a geoopt
``CanonicalStiefel`` maps to the same set with the embedded metric. Any other
geoopt manifold is wrapped in :class:`GeooptAdapter`.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import geoopt
from torch import Tensor

from .base import Manifold
from .euclidean import Euclidean
from .sphere import Sphere
from .stiefel import Stiefel

__all__ = ["GeooptAdapter", "as_geodyn"]


class GeooptAdapter(Manifold):
    """A geoopt manifold seen through the geodyn interface.

    ``project``, ``proj_tangent``, ``retract``, ``egrad2rgrad``, ``inner`` and
    ``transp`` forward to geoopt's ``projx``, ``proju``, ``retr``,
    ``egrad2rgrad``, ``inner`` and ``transp``. ``shake(x, y)`` is ``projx(y)``:
    a projection, not a SHAKE step (the correction need not lie in the normal
    space at x). ``constraint(x)`` is x - projx(x), flattened per point.
    """

    name = "GeooptAdapter"
    linear_transport = False  # geoopt's transp, not declared to be the tangent projection

    def __init__(self, manifold: geoopt.Manifold) -> None:
        super().__init__()
        self.manifold = manifold
        self.ndim = int(manifold.ndim)

    def _params(self) -> tuple[object, ...]:
        return (id(self.manifold),)

    def __repr__(self) -> str:
        return f"GeooptAdapter({self.manifold!r})"

    def constraint(self, x: Tensor) -> Tensor:
        d = x - self.manifold.projx(x)
        batch = x.shape[: x.dim() - self.ndim]
        return d.reshape(*batch, math.prod(x.shape[x.dim() - self.ndim :]))

    def project(self, x: Tensor) -> Tensor:
        self.check_finite(x, "x")
        return self.manifold.projx(x)

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return self.manifold.proju(x, v)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self.manifold.egrad2rgrad(x, u)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        return self.manifold.retr(x, v)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        return self.manifold.expmap(x, u)

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        return self.manifold.transp(x, y, v)

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        return self.manifold.inner(x, u, v, keepdim=keepdim)

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        """projx(y): a projection onto M, not a multiplier step along the normal at x."""
        return self.manifold.projx(y)

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        ok, reason = self.manifold._check_shape(tuple(shape), name)
        return None if ok else reason


def as_geodyn(manifold: Any) -> Manifold:
    """The geodyn manifold for ``manifold``; geodyn manifolds are returned unchanged.

    geoopt Euclidean -> :class:`Euclidean`, Sphere without a subspace ->
    :class:`Sphere`, Stiefel (Euclidean or Canonical) -> :class:`Stiefel`
    (embedded metric), anything else -> :class:`GeooptAdapter`. A geoopt manifold
    object is adapted once (later calls return the same geodyn manifold).

    Raises:
        ValueError: ``manifold`` is neither a geodyn nor a geoopt manifold.
    """
    if isinstance(manifold, Manifold):
        return manifold
    if not isinstance(manifold, geoopt.Manifold):
        raise ValueError(
            "manifold must be a geodyn or geoopt manifold (a geodyn Manifold such as "
            f"geodyn.manifolds.Sphere(), or a geoopt.Manifold), got {type(manifold).__name__}"
        )
    adapted = _ADAPTED.get(manifold)
    if adapted is None:
        adapted = _ADAPTED[manifold] = _adapt(manifold)
    return adapted


_ADAPTED: weakref.WeakKeyDictionary[geoopt.Manifold, Manifold] = weakref.WeakKeyDictionary()


def _adapt(manifold: geoopt.Manifold) -> Manifold:
    if isinstance(manifold, geoopt.Euclidean):
        return Euclidean()
    if isinstance(manifold, geoopt.Sphere) and getattr(manifold, "projector", None) is None:
        return Sphere()
    if isinstance(manifold, geoopt.Stiefel):
        return Stiefel()
    return GeooptAdapter(manifold)
