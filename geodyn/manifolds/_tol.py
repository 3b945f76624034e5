"""Stopping tolerances of the iterative solves, scaled to the dtype and the problem size."""

from __future__ import annotations

import math

import torch

from .base import default_atol

__all__ = ["check_solver_args", "solver_tol"]


def solver_tol(dtype: torch.dtype, size: int) -> float:
    """Residual at which an iterative constraint solve stops.

    64 eps (1 + log2 size): a few units of rounding in a summed residual,
    capped at a tenth of :func:`default_atol` (1e-6 in float32, about three
    times the rounding floor of a float32 residual), so a converged point
    passes ``check_point`` with room to spare.
    """
    eps = torch.finfo(dtype).eps
    return min(64 * eps * (1 + math.log2(max(size, 1))), 0.1 * default_atol(dtype))


def check_solver_args(shake_tol: float | None, shake_maxiter: int) -> None:
    """Raise ``ValueError`` for a non-positive ``shake_tol`` or ``shake_maxiter``."""
    if shake_tol is not None and not shake_tol > 0:
        raise ValueError(f"shake_tol must be positive (or None for the default), got {shake_tol}")
    if int(shake_maxiter) < 1:
        raise ValueError(f"shake_maxiter must be at least 1, got {shake_maxiter}")
