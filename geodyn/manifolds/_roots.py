"""Root finding for the constraint solves: one residual-driven Newton loop, and
batched scalar roots by Newton's method kept inside a bracket by bisection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from .base import ConvergenceError

__all__ = ["bracketed_newton", "newton"]

State = TypeVar("State")


def newton(
    residual: Callable[[State], tuple[Tensor, Any]],
    step: Callable[[State, Tensor, Any], State | None],
    state: State,
    *,
    tol: float,
    maxiter: int,
    failure: str,
    polish: bool = False,
) -> State:
    """Iterate ``state <- step(state, c, aux)`` until max |c| <= ``tol``.

    ``residual(state)`` returns the residual c at ``state`` and whatever the step
    needs from that evaluation (a Jacobian); ``step`` returns the next state, or
    ``None`` when no Newton step exists there (a singular or non-finite system).
    With ``polish`` the step is also taken from the converged state (it squares
    the residual) and its result returned.

    Raises:
        ConvergenceError: with message ``failure``, the last max |c| and the
            iteration count, when c is not finite, no step exists, or ``maxiter``
            steps miss ``tol``.
    """
    res = float("nan")
    iteration = 0
    for iteration in range(maxiter + 1):
        c, aux = residual(state)
        res = float(c.abs().max()) if c.numel() else 0.0
        converged = res <= tol
        if not converged and (not res < math.inf or iteration == maxiter):
            break
        if converged and not polish:
            return state
        following = step(state, c, aux)
        if following is None:
            break
        if converged:
            return following
        state = following
    raise ConvergenceError(failure, residual=res, iterations=iteration)


def bracketed_newton(
    f_df: Callable[[Tensor], tuple[Tensor, Tensor]],
    lo: Tensor,
    hi: Tensor,
    x: Tensor,
    *,
    xtol: Tensor | float,
    maxiter: int = 100,
) -> tuple[Tensor, bool]:
    """Roots of f elementwise, with f(lo) <= 0 <= f(hi) (lo <= hi) for every entry.

    Each step takes the Newton step x - f/f' when it stays inside the
    bracket and bisects otherwise; the bracket shrinks by the sign of f. An
    entry stops when its step or bracket width is below ``xtol`` and is then
    left alone, so every entry's root is independent of the others.

    Returns:
        The roots and whether every entry met ``xtol`` within ``maxiter`` steps.
    """
    x = torch.minimum(torch.maximum(x, lo), hi)
    done = torch.zeros_like(x, dtype=torch.bool)
    for _ in range(maxiter):
        f, df = f_df(x)
        lo = torch.where(f <= 0, x, lo)
        hi = torch.where(f >= 0, x, hi)
        newton_step = x - f / df
        inside = (newton_step >= lo) & (newton_step <= hi) & torch.isfinite(newton_step)
        x_new = torch.where(inside, newton_step, 0.5 * (lo + hi))
        stop = ((x_new - x).abs() <= xtol) | ((hi - lo) <= xtol) | (f == 0)
        x = torch.where(done, x, x_new)
        done = done | stop
        if bool(done.all()):
            return x, True
    return x, False
