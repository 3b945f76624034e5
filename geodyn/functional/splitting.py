r"""The sub-steps of the splitting family as pure functions (see ``geodyn.integrators.Splitting``).

* B (kick): $p' = \mathrm{rattle}_x(p - h g)$
* A (drift): $(x', p') = $ ``manifold.drift(x, p, h)``: SHAKE + RATTLE,
  $x' = \mathrm{shake}(x, x + h p)$, $p' = \mathrm{rattle}_{x'}((x' - x)/h)$
* O (thermostat): $p' = P_x(c p + \sigma \xi)$, $c = e^{-\gamma h}$,
  $\sigma = \sqrt{(1 - c^2)\tau}$, with the noise $\xi \sim N(0, I)$ passed in
  (so the function is pure); $c p + \sigma P_x \xi$ where the projection is not linear.
"""

from __future__ import annotations

import math

from torch import Tensor

from ..manifolds import Manifold

__all__ = ["drift", "kick", "thermostat"]


def kick(manifold: Manifold, x: Tensor, p: Tensor, grad: Tensor, h: float) -> Tensor:
    """B: p' = rattle_x(p - h grad) (``grad`` already holds any weight decay)."""
    return manifold.rattle(x, p - h * grad)


def drift(
    manifold: Manifold, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
) -> tuple[Tensor, Tensor]:
    """A: move x for time h along p on M; returns (x', p').

    ``rattle=False`` leaves p' = (x' - x)/h unprojected, for a caller whose next op
    projects at x' (valid with ``manifold.linear_transport``).
    """
    return _shake_rattle(manifold, x, p, h, rattle=rattle)


def _shake_rattle(
    manifold: Manifold, x: Tensor, p: Tensor, h: float, *, rattle: bool
) -> tuple[Tensor, Tensor]:
    x_new = manifold.shake(x, x + h * p)
    p_new = (x_new - x) / h
    return x_new, manifold.rattle(x_new, p_new) if rattle else p_new


def thermostat(
    manifold: Manifold,
    x: Tensor,
    p: Tensor,
    noise: Tensor | None,
    *,
    h: float,
    gamma: float,
    tau: float,
) -> Tensor:
    """O: the exact Ornstein-Uhlenbeck step of the momentum on T_x M for time h.

    ``noise`` is a standard normal tensor shaped like x (``None`` when tau = 0).
    """
    c = math.exp(-gamma * h)
    sigma = math.sqrt((1 - c * c) * tau)
    if sigma == 0:
        return manifold.rattle(x, c * p) if manifold.linear_transport else c * p
    if noise is None:
        raise ValueError("thermostat with tau > 0 needs noise: a standard normal tensor like x")
    if manifold.linear_transport:  # P(c p + sigma xi), also the RATTLE an A step left
        return manifold.rattle(x, c * p + sigma * noise)
    return c * p + sigma * manifold.proj_tangent(x, noise)
