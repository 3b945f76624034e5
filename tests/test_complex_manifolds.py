"""Complex Stiefel and the complex sphere obey every law of geodyn.testing in complex dtypes."""

from __future__ import annotations

import pytest
import torch

from geodyn.manifolds import ComplexSphere, ComplexStiefel
from geodyn.testing import LAWS, check_manifold

CASES = [
    ("complex-stiefel-qr-tall", ComplexStiefel("qr"), (5, 3)),
    ("complex-stiefel-ns-wide-batch", ComplexStiefel("newton-schulz"), (2, 2, 4)),
    ("complex-sphere", ComplexSphere(), (3,)),
    ("complex-sphere-batch", ComplexSphere(2.0), (2, 4)),
]


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64], ids=["c128", "c64"])
@pytest.mark.parametrize(("manifold", "shape"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_law_holds_in_complex_dtypes(manifold, shape, dtype):
    report = check_manifold(manifold, shape, dtype)
    assert list(report["examples"]) == [law for law in LAWS if law != "equivariance"]
    assert report["worst"]["residual"] <= report["tolerance"]["residual"]
    assert report["worst"]["retract rate (min)"] >= 3.0
