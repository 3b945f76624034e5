r"""Riemannian SGD with momentum as a pure function (torch.optim.SGD's conventions).

With $d = P_x(g + w x)$: $b = \mu\,\mathcal{T}(b_{old}) + (1 - \delta)\, d$ ($b = d$ on the
first step), $u = d + \mu b$ (Nesterov) or $b$, $x' = R_x(-\eta u)$, and $b$ moved to
$T_{x'}M$ by ``retr_transp``. With linear transport and no Nesterov momentum the move is
folded into the next step's projection, $b = P_x(\mu b_{old} + (1 - \delta)(g + w x))$:
the same iterates with one projection per step; the returned $b$ is then tangent at
$x$, the point it was used at, not at $x'$.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..manifolds import Manifold

__all__ = ["accumulate", "rsgd_step"]


def accumulate(old: Tensor | None, v: Tensor, momentum: float, dampening: float) -> Tensor:
    """The momentum buffer mu b_old + (1 - delta) v, or v on the first step (no b_old)."""
    return v if old is None else torch.mul(old, momentum).add_(v, alpha=1 - dampening)


def rsgd_step(
    manifold: Manifold,
    x: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> tuple[Tensor, Tensor | None]:
    """One Riemannian SGD step: ``(x, grad, buffer) -> (x', buffer')``.

    ``momentum_buffer`` is ``None`` on the first step; the returned buffer is ``None``
    without momentum. Pure: no input is modified.
    """
    g = torch.add(grad, x, alpha=weight_decay) if weight_decay else grad
    if momentum and not nesterov and manifold.linear_transport:
        buf = manifold.proj_tangent(x, accumulate(momentum_buffer, g, momentum, dampening))
        return manifold.retract(x, torch.mul(buf, -lr)), buf
    d = manifold.proj_tangent(x, g)
    if not momentum:
        return manifold.retract(x, torch.mul(d, -lr)), None
    buf = accumulate(momentum_buffer, d, momentum, dampening)
    u = torch.add(d, buf, alpha=momentum) if nesterov else buf
    return manifold.retr_transp(x, torch.mul(u, -lr), buf)
