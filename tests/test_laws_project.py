"""The project law: a projection fixes M, is near, and is nearest where the manifold says so."""

from __future__ import annotations

import pytest
import torch

from geodyn.manifolds import Sphere
from geodyn.testing import check_manifold

F64 = torch.float64
FEW = 25  # examples per law: each broken projection fails on almost every example


class ConstantProjection(Sphere):
    """Every input goes to r e_1: on M and idempotent, but it moves the points of M."""

    def project(self, x):
        e1 = torch.zeros_like(x)
        e1[..., 0] = self.radius
        return e1


class AntipodalProjection(Sphere):
    """Points of M stay, others go to the far side: idempotent, fixes M, far from y."""

    def project(self, x):
        on = super().project(x)
        keep = (x - on).norm(dim=-1, keepdim=True) <= 1e-12 * self.radius
        return torch.where(keep, on, -on)


class CrookedProjection(Sphere):
    """Normalises y plus a rotated copy of its distance to M: fixes M, near, not nearest."""

    def project(self, x):
        off = x - super().project(x)
        return super().project(x + off.roll(1, dims=-1))


@pytest.mark.parametrize(
    ("manifold", "law"),
    [
        (ConstantProjection(), "project fixes the points of M"),
        (AntipodalProjection(), "project is no farther than other points of M"),
        (CrookedProjection(), "project is the nearest point"),
    ],
    ids=lambda p: type(p).__name__ if not isinstance(p, str) else "",
)
def test_broken_projection_is_rejected(manifold: Sphere, law: str) -> None:
    with pytest.raises(AssertionError, match=f"law '{law}'"):
        check_manifold(manifold, (3, 4), F64, max_examples=FEW)


def test_nearest_point_is_checked_only_where_claimed() -> None:
    # the crooked projection is a fine nearby projection once it stops claiming nearest
    class Nearby(CrookedProjection):
        project_is_nearest = False

    # (the roll breaks the sphere's rotation symmetry, which this test is not about)
    report = check_manifold(Nearby(), (3, 4), F64, max_examples=FEW, symmetries=())
    assert report["examples"]["project"] == FEW
    assert "project first-order condition" not in report["worst"]
    assert report["worst"]["project fixes M"] <= report["tolerance"]["residual"]
