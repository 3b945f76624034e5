r"""Steepest descent under the spectral norm (Muon and its constrained forms) as pure functions.

Muon (``torch.optim.Muon``'s conventions): with the buffer an exponential average,
$b = \mu\, b_{old} + (1 - \mu)\, g$ (zero before the first step), $u = (1 - \mu) g + \mu b$
(Nesterov) or $b$, and $O = \mathrm{msign}(u)$,

$$x' = x (1 - \eta w) - \eta\, r(n, p)\, O, \qquad r = \sqrt{\max(1, n/p)} \ \text{(or
} 0.2 \sqrt{\max(n, p)} \text{ for ``match_rms_adamw''}).$$

On a manifold M the gradient and the transported buffer are projected onto $T_x M$
and the step is $x' = R_x(-\eta r O - \eta w x)$. With Stiefel's ``"newton-schulz"``
(or ``"polar"``) retraction this is the Spel form $x' = \mathrm{polar}(x - a\,
\mathrm{msign}(\mathrm{grad}_M f))$; a projection-type retraction is what makes the
normal part of $O$ harmless (it moves the point only at second order).

The exact tangent-space step of manifold Muon (Bernstein 2025) solves
$\min \langle G, A\rangle$ subject to $\|A\|_2 \le 1$ and $\mathrm{sym}(W^\top A) = 0$;
its dual is $\min_{\Lambda = \Lambda^\top} \|G + 2 W \Lambda\|_*$, whose gradient is
$H = W^\top \Xi + \Xi^\top W$ with $\Xi = \mathrm{msign}(G + 2 W \Lambda)$, and the
primal solution is $A = -\Xi$ at $H = 0$ (:func:`stiefel_spectral_direction`).

The hyperball form (fixed Frobenius norm R):
$x' = R\, \mathrm{normalize}(x - \eta R\, \mathrm{normalize}(O))$, the sphere's
retraction of the step $-\eta R\, O / |O|_F$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..manifolds import ConvergenceError, Manifold, msign

__all__ = [
    "adjusted_lr",
    "hyperball_step",
    "manifold_muon_step",
    "muon_step",
    "spectral_momentum",
    "stiefel_spectral_direction",
]

Coefficients = str | tuple[float, float, float]


def adjusted_lr(lr: float, shape: tuple[int, ...], adjust_lr_fn: str | None = None) -> float:
    """torch.optim.Muon's learning rate for an (n, p) matrix: lr sqrt(max(1, n/p)) by default.

    ``"match_rms_adamw"``: 0.2 lr sqrt(max(n, p)) (RMS of AdamW's update).
    """
    n, p = shape[-2], shape[-1]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1.0, n / p))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(n, p))
    raise ValueError(
        f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}"
    )


def spectral_momentum(
    manifold: Manifold | None,
    x: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None,
    *,
    momentum: float,
    nesterov: bool,
) -> tuple[Tensor, Tensor]:
    """The buffer b = mu P_x b_old + (1 - mu) P_x g and the update u to orthogonalise.

    ``manifold=None`` is flat space (no projection). Returns (u, b).
    """
    if manifold is not None:
        grad = manifold.proj_tangent(x, grad)
    old = torch.zeros_like(grad) if momentum_buffer is None else momentum_buffer
    if manifold is not None and momentum_buffer is not None:
        old = manifold.proj_tangent(x, old)
    buf = old.lerp(grad, 1 - momentum)
    return (grad.lerp(buf, momentum) if nesterov else buf), buf


def muon_step(
    manifold: Manifold | None,
    x: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None = None,
    *,
    lr: float,
    momentum: float = 0.95,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    coefficients: Coefficients = "quintic",
    ns_steps: int = 5,
    eps: float = 1e-7,
    adjust_lr_fn: str | None = None,
    dtype: torch.dtype | None = torch.bfloat16,
) -> tuple[Tensor, Tensor]:
    """One Muon step on (..., n, p) matrices: ``(x, grad, buffer) -> (x', buffer')``.

    ``manifold=None``: torch.optim.Muon's update, x (1 - lr w) - lr r O. Otherwise
    x' = R_x(-lr r O - lr w x) with the Riemannian gradient and a projected buffer.
    ``dtype`` is msign's working dtype (bfloat16 as in torch.optim.Muon).
    """
    u, buf = spectral_momentum(
        manifold, x, grad, momentum_buffer, momentum=momentum, nesterov=nesterov
    )
    o = msign(u, coefficients, ns_steps, eps=eps, dtype=dtype).to(x.dtype)
    step = adjusted_lr(lr, tuple(x.shape), adjust_lr_fn)
    if manifold is None:
        shrunk = x * (1 - lr * weight_decay) if weight_decay else x
        return shrunk.add(o, alpha=-step), buf
    v = o * -step
    if weight_decay:
        v = v - (lr * weight_decay) * x
    return manifold.retract(x, v), buf


def hyperball_step(
    x: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None = None,
    *,
    lr: float,
    radius: float | Tensor,
    momentum: float = 0.95,
    nesterov: bool = True,
    coefficients: Coefficients = "quintic",
    ns_steps: int = 5,
    eps: float = 1e-7,
    norm_eps: float = 1e-8,
    dtype: torch.dtype | None = torch.bfloat16,
) -> tuple[Tensor, Tensor]:
    """One MuonHyperball step: x' = R normalize(x - lr R normalize(msign(u))), |x'|_F = R.

    The normalisation is the retraction of the sphere of radius R in R^{n p} (each
    matrix of the batch its own point); ``radius`` is a float or a tensor broadcasting
    against the batch, e.g. each weight's initial Frobenius norm.
    """
    u, buf = spectral_momentum(
        None, x, grad, momentum_buffer, momentum=momentum, nesterov=nesterov
    )
    o = msign(u, coefficients, ns_steps, eps=eps, dtype=dtype).to(x.dtype)
    r = torch.as_tensor(radius, dtype=x.dtype, device=x.device)
    r = r.reshape(*r.shape, 1, 1) if r.dim() else r
    o_norm = torch.linalg.matrix_norm(o, keepdim=True).clamp_min(norm_eps)
    y = x - (lr * r / o_norm) * o
    return y * (r / torch.linalg.matrix_norm(y, keepdim=True).clamp_min(norm_eps)), buf


def stiefel_spectral_direction(
    w: Tensor,
    g: Tensor,
    *,
    tol: float | None = None,
    maxiter: int = 1000,
) -> Tensor:
    r"""argmin <G, A> over A tangent at W (sym(W^T A) = 0) with |A|_2 <= 1: manifold Muon's step.

    Dual descent on the symmetric multiplier, from $\Lambda_0 = -\mathrm{sym}(W^\top G)/2$
    (exact for square W, where the answer is $-W \mathrm{msign}(\mathrm{skew}(W^\top G))$):
    $\Lambda \leftarrow \Lambda - \alpha H$, with $\alpha$ (starting at $|G|_2 / 4$)
    grown by 1.2 when $|H|_F$ decreases and halved (the step rejected) when not. The
    exact matrix sign (SVD) is used inside, so the returned $A = -\mathrm{msign}(G + 2 W
    \Lambda)$ has $|A|_2 = 1$ and is tangent to ``tol``. Tall W (n >= p); a batch of
    independent problems in the leading dimensions.

    Raises:
        ConvergenceError: max |H| > tol after ``maxiter`` iterations.
    """
    if w.shape != g.shape or w.dim() < 2 or w.shape[-2] < w.shape[-1]:
        raise ValueError(
            f"w and g must have one tall shape (..., n, p) with n >= p, got {tuple(w.shape)} "
            f"and {tuple(g.shape)}; transpose a wide frame"
        )
    if tol is None:
        tol = 64 * torch.finfo(w.dtype).eps * math.sqrt(w.shape[-1])

    def sign_and_gap(lam: Tensor) -> tuple[Tensor, Tensor]:
        u, _, vh = torch.linalg.svd(g + 2 * w @ lam, full_matrices=False)
        xi = u @ vh
        return xi, w.mT @ xi + xi.mT @ w

    lam = -0.25 * (w.mT @ g + g.mT @ w)
    xi, h = sign_and_gap(lam)
    size = h.flatten(-2).norm(dim=-1)
    alpha = 0.25 * torch.linalg.matrix_norm(g, ord=2)
    shape = (*alpha.shape, 1, 1)
    residual = math.inf
    for iteration in range(maxiter + 1):
        residual = float(h.abs().max())
        if residual <= tol:
            return -xi
        if not math.isfinite(residual) or iteration == maxiter:
            break
        trial = lam - alpha.reshape(shape) * h
        xi_t, h_t = sign_and_gap(trial)
        size_t = h_t.flatten(-2).norm(dim=-1)
        better = size_t < size
        keep = better.reshape(shape)
        lam = torch.where(keep, trial, lam)
        xi, h = torch.where(keep, xi_t, xi), torch.where(keep, h_t, h)
        size = torch.where(better, size_t, size)
        alpha = torch.where(better, 1.2 * alpha, 0.5 * alpha)
    raise ConvergenceError(
        "stiefel_spectral_direction: the dual descent did not reach a tangent direction "
        f"(max |sym(W^T A)| > tol {tol:.1e}); raise maxiter or tol",
        residual=residual,
        iterations=iteration,
    )


def manifold_muon_step(
    manifold: Manifold,
    x: Tensor,
    grad: Tensor,
    momentum_buffer: Tensor | None = None,
    *,
    lr: float,
    momentum: float = 0.95,
    nesterov: bool = True,
    tol: float | None = None,
    maxiter: int = 1000,
) -> tuple[Tensor, Tensor]:
    """Manifold Muon on Stiefel: x' = R_x(lr A), A the exact spectral steepest-descent direction.

    The direction comes from :func:`stiefel_spectral_direction` applied to the
    (projected) momentum; ``manifold`` is a Stiefel manifold, ideally with a polar-type
    retraction. Wide frames are handled by transposition.
    """
    u, buf = spectral_momentum(
        manifold, x, grad, momentum_buffer, momentum=momentum, nesterov=nesterov
    )
    wide = x.shape[-2] < x.shape[-1]
    if wide:
        a = stiefel_spectral_direction(x.mT, u.mT, tol=tol, maxiter=maxiter).mT
    else:
        a = stiefel_spectral_direction(x, u, tol=tol, maxiter=maxiter)
    return manifold.retract(x, a * lr), buf
