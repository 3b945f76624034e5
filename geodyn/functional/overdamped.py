r"""Overdamped constrained Langevin (SHAKE-projected SGLD) as a pure function.

$$x' = \mathrm{shake}\big(x,\; x + P_x\big(-h (g + w x) + \sqrt{2 h \tau}\, \xi\big)\big),$$

with the noise $\xi \sim N(0, I)$ passed in.
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
    return manifold.shake(x, x + manifold.proj_tangent(x, v))
