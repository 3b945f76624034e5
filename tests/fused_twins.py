"""The row manifolds and the circle lift, and twins of them on which no fast path applies
(each overrides a verb a fast path rewrites with itself), for the tests of the fast
paths."""

from __future__ import annotations

import torch

from geodyn.manifolds import CircleLift, LpSphere, NeuronSpheres, Sphere


class GenericSphere(Sphere):
    """The sphere with an overridden (identical) projection: no fast path applies."""

    def proj_tangent(self, x, v):
        return super().proj_tangent(x, v)


class GenericNeuronSpheres(NeuronSpheres):
    def proj_tangent(self, x, v):
        return super().proj_tangent(x, v)


RADII = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
TWINS = {
    "Sphere": (lambda: Sphere(1.5), lambda: GenericSphere(1.5)),
    "NeuronSpheres": (lambda: NeuronSpheres(RADII), lambda: GenericNeuronSpheres(RADII)),
}


class GenericCircleLift(CircleLift):
    """The circle lift with overridden (identical) projection and drift: no fast path."""

    def proj_tangent(self, x, v):
        return super().proj_tangent(x, v)

    def drift(self, x, p, h, *, rattle=True):
        return super().drift(x, p, h, rattle=rattle)


class GenericLpSphere(LpSphere):
    """The Lp sphere with an overridden (identical) projection: no fast path applies."""

    def proj_tangent(self, x, v):
        return super().proj_tangent(x, v)


# the lift's drift is a rotation, the Lp sphere's SHAKE a scalar root, neither from row
# sums: kept apart from the rows' twins
LIFT = {"CircleLift": (lambda: CircleLift(0.9), lambda: GenericCircleLift(0.9))}
LP = {"LpSphere": (lambda: LpSphere(3.0, radius=1.2), lambda: GenericLpSphere(3.0, radius=1.2))}


def point_shape(manifold):
    """The shape of the tests' points on ``manifold``: 6 x 5 weights (pairs when lifted)."""
    return (6, 5, 2) if manifold.lifted else (6, 5)
