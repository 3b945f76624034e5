r"""Overdamped constrained Langevin (SHAKE-projected SGLD) as a pure function.

$$v = P_x\big(-h (g + w x) + \sqrt{2 h \tau}\, \xi\big), \qquad
x' = \mathrm{drift}_M(x, v, 1),$$

with the noise $\xi \sim N(0, I)$ passed in: the position moves by the manifold's own A
step for unit time along the tangent increment (its momentum discarded). For an equality
set the default drift is SHAKE, $x' = \mathrm{shake}(x, x + v)$; on the norm ball it is
the elastic reflection at the wall, the symmetrized (reflected) Euler scheme, which keeps
the uniform law to O(h) where putting the point back on the wall piles mass there with an
O(sqrt h) bias; the circle lift moves along its geodesic.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..manifolds import Manifold

__all__ = ["overdamped_step"]


def overdamped_step(
    manifold: Manifold,
    x: Tensor,
    grad: Tensor,
    noise: Tensor | None = None,
    *,
    h: float,
    tau: float = 0.0,
    weight_decay: float = 0.0,
) -> Tensor:
    """One step of size h at temperature tau (``noise`` standard normal; ``None`` if tau = 0)."""
    v = -h * (grad + weight_decay * x) if weight_decay else -h * grad
    if tau > 0:
        if noise is None:
            raise ValueError("overdamped_step with tau > 0 needs noise: a standard normal like x")
        v = v + math.sqrt(2 * h * tau) * noise
    return manifold.drift(x, manifold.proj_tangent(x, v), 1.0, rattle=False)[0]
