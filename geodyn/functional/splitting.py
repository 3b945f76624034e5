r"""The sub-steps of the splitting family as pure functions (see ``geodyn.integrators.Splitting``).

* B (kick): $p' = \mathrm{rattle}_x(p - h g)$
* A (drift): $(x', p') = $ ``manifold.drift(x, p, h)``: by default SHAKE + RATTLE,
  $x' = \mathrm{shake}(x, x + h p)$, $p' = \mathrm{rattle}_{x'}((x' - x)/h)$; a manifold
  with an exact flow (the circle lift's rotation) overrides it. :func:`retract_drift`
  is the A step by a retraction instead.
* O (thermostat): $p' = c p + \sigma P_x \xi$, $c = e^{-\gamma h}$,
  $\sigma = \sqrt{(1 - c^2)\tau}$, with the noise $\xi \sim N(0, I)$ passed in
  (so the function is pure); $P_x(c p + \sigma \xi)$ when ``project`` (linear transport:
  it also applies the RATTLE an A step left).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..manifolds import Manifold
from ..manifolds.base import _out, rattle_owned

__all__ = ["drift", "kick", "ou_coefficients", "retract_drift", "thermostat"]


def kick(
    manifold: Manifold,
    x: Tensor,
    p: Tensor,
    grad: Tensor,
    h: float,
    *,
    rattle: bool = True,
    out: Tensor | None = None,
) -> Tensor:
    """B: p' = rattle_x(p - h grad) (``grad`` already holds any weight decay).

    ``rattle=False`` returns p - h grad, its RATTLE at x left to a caller whose next
    sub-step projects at x anyway (valid with ``manifold.linear_transport``). ``out``:
    memory like p to compute p' in (it may be p itself; its contents are lost); p' is
    returned, in ``out`` where the manifold's RATTLE works in place, else new.
    """
    v = torch.add(p, grad, alpha=-h, **_out(out))
    return rattle_owned(manifold, x, v) if rattle else v


def drift(
    manifold: Manifold, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
) -> tuple[Tensor, Tensor]:
    """A: move x for time h along p on M (the manifold's own A step); returns (x', p').

    ``rattle=False`` leaves p' unprojected, for a caller whose next op projects at x'
    (valid with ``manifold.linear_transport``).
    """
    return manifold.drift(x, p, h, rattle=rattle)


def retract_drift(
    manifold: Manifold, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
) -> tuple[Tensor, Tensor]:
    r"""A by a retraction: $(x', p') = \mathrm{retr\_transp}(x, h p, p)$.

    With ``rattle=False`` (linear transport, the next op projects) p' = p is left for
    that projection to move: $x' = R_x(h p)$.
    """
    if rattle:
        return manifold.retr_transp(x, torch.mul(p, h), p)
    return manifold.retract(x, torch.mul(p, h)), p


def ou_coefficients(h: float, gamma: float, tau: float) -> tuple[float, float]:
    """(c, sigma) of the Ornstein-Uhlenbeck step: c = exp(-gamma h), sigma = sqrt((1 - c^2) tau)."""
    c = math.exp(-gamma * h)
    return c, math.sqrt((1 - c * c) * tau)


def thermostat(
    manifold: Manifold,
    x: Tensor,
    p: Tensor,
    noise: Tensor | None,
    *,
    h: float,
    gamma: float,
    tau: float,
    project: bool | None = None,
    rattle: bool = True,
    out: Tensor | None = None,
) -> Tensor:
    """O: the exact Ornstein-Uhlenbeck step of the momentum on T_x M for time h.

    ``noise`` is a standard normal tensor shaped like x (``None`` when tau = 0).
    ``project`` (default: ``manifold.linear_transport``) projects the whole result,
    rattle_x(c p + sigma xi) = c P_x p + sigma P_x xi, for a p that carries the RATTLE
    an A step left; otherwise p is tangent and only the noise is projected.
    ``rattle=False`` returns c p + sigma xi, whose RATTLE at x (the O step itself then)
    a caller leaves to its next sub-step, as in :func:`kick`; ``out`` is that of
    :func:`kick` (and must not be ``noise``).
    """
    c, sigma = ou_coefficients(h, gamma, tau)
    if sigma > 0 and noise is None:
        raise ValueError("thermostat with tau > 0 needs noise: a standard normal tensor like x")
    if project is None:
        project = manifold.linear_transport
    cp = torch.mul(p, c, **_out(out))
    if not rattle:
        return cp if noise is None or sigma == 0 else cp.add_(noise, alpha=sigma)
    if noise is None or sigma == 0:
        return rattle_owned(manifold, x, cp) if project else cp
    if project:
        return rattle_owned(manifold, x, cp.add_(noise, alpha=sigma))
    return cp.add_(manifold.proj_tangent(x, noise), alpha=sigma)
