"""The row manifolds and twins of them on which no fast path applies (each overrides a
verb a fast path rewrites with itself), for the tests of the fast paths."""

from __future__ import annotations

import torch

from geodyn.manifolds import NeuronSpheres, Sphere


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
