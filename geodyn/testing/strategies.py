"""Hypothesis strategies for points, tangent vectors and step sizes on any manifold.

Every tensor comes from a ``torch.Generator`` seeded with an integer that
hypothesis draws, so a failing example is reproduced (and shrunk) exactly.
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import Tensor

from geodyn.manifolds import Manifold

from .geometry import point_norms, point_size

__all__ = [
    "ambient_vectors",
    "batch_shapes",
    "generators",
    "perturbed",
    "points",
    "seeds",
    "step_sizes",
    "tangent_vectors",
]

_WHERE = ("random", "interior", "boundary")
_STREAM_STRIDE = 0x9E3779B97F4A7C15
_POINTS, _TANGENTS, _AMBIENT, _NOISE = 1, 2, 3, 4


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``torch.Generator.manual_seed``."""
    return st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def generators(draw: st.DrawFn, stream: int = 0) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with a drawn seed.

    ``stream`` mixes into the seed, so strategies for different roles (points,
    tangent vectors, noise) never share a random stream when hypothesis draws
    the same seed for them (it starts every search at seed 0).
    """
    return torch.Generator().manual_seed((draw(seeds()) + stream * _STREAM_STRIDE) % 2**64)


def batch_shapes(max_dims: int = 2, max_side: int = 3) -> st.SearchStrategy[tuple[int, ...]]:
    """Leading batch shapes: ``()`` and up to ``max_dims`` sides of length 1..``max_side``."""
    return st.lists(st.integers(1, max_side), max_size=max_dims).map(tuple)


def step_sizes(min_exponent: int = -8, max_exponent: int = -2) -> st.SearchStrategy[float]:
    """Step sizes 2^k log-uniformly with k in [``min_exponent``, ``max_exponent``]."""
    return st.floats(min_exponent, max_exponent, allow_nan=False).map(lambda k: 2.0**k)


def _per_point(manifold: Manifold, x: Tensor, values: Tensor) -> Tensor:
    """Values of shape (B,) reshaped to broadcast against the points of ``x``."""
    batch = x.shape[: x.dim() - manifold.ndim]
    return values.reshape(*batch, *([1] * manifold.ndim))


@st.composite
def ambient_vectors(
    draw: st.DrawFn, shape: tuple[int, ...], dtype: torch.dtype = torch.float64
) -> Tensor:
    """Standard Gaussian tensors of ``shape`` (not tied to any manifold)."""
    return torch.randn(shape, dtype=dtype, generator=draw(generators(_AMBIENT)))


@st.composite
def points(
    draw: st.DrawFn,
    manifold: Manifold,
    shape: tuple[int, ...],
    dtype: torch.dtype = torch.float64,
    *,
    perturbation: float = 0.0,
    where: str = "random",
) -> Tensor:
    """Points of ``manifold`` of ``shape``, optionally pushed off it.

    Args:
        manifold: the set to sample from (``random_point`` with a drawn seed).
        shape: full tensor shape, batch dimensions included.
        dtype: floating dtype of the result.
        perturbation: if positive, add Gaussian noise of relative size sigma
            drawn uniformly from [0, ``perturbation``] (relative to each point's
            RMS entry), so the result is near but generally off M.
        where: for inequality sets, ``"interior"`` projects a small Gaussian
            (near the origin) and ``"boundary"`` projects a far one; ``"random"``
            uses ``random_point``.
    """
    if where not in _WHERE:
        raise ValueError(f"where must be one of {_WHERE}, got {where!r}")
    gen = draw(generators(_POINTS))
    x = manifold.random_point(*shape, dtype=dtype, generator=gen)
    if where != "random":
        rms = point_norms(manifold, x).square().mean().sqrt().clamp_min(1.0)
        scale = 1e-2 if where == "interior" else 1e2
        noise = torch.randn(shape, dtype=dtype, generator=gen)
        x = manifold.project(x * scale + noise * (scale * rms))
    if perturbation > 0:
        x = _perturb(manifold, x, draw(st.floats(0.0, perturbation, allow_nan=False)), gen)
    return x


def _perturb(manifold: Manifold, x: Tensor, sigma: float, gen: torch.Generator) -> Tensor:
    """x plus Gaussian noise of sigma times each point's RMS entry."""
    n = point_size(manifold, tuple(x.shape))
    rms = _per_point(manifold, x, point_norms(manifold, x) / max(n, 1) ** 0.5)
    return x + sigma * rms * torch.randn(x.shape, dtype=x.dtype, generator=gen)


@st.composite
def perturbed(draw: st.DrawFn, manifold: Manifold, x: Tensor, perturbation: float) -> Tensor:
    """``x`` plus Gaussian noise of relative size sigma drawn from [0, ``perturbation``]
    (relative to each point's RMS entry): near but generally off M."""
    sigma = draw(st.floats(0.0, perturbation, allow_nan=False))
    return _perturb(manifold, x, sigma, draw(generators(_NOISE)))


@st.composite
def tangent_vectors(
    draw: st.DrawFn,
    manifold: Manifold,
    x: Tensor,
    *,
    relative_norm: float | None = None,
) -> Tensor:
    """Tangent vectors at ``x`` (``random_tangent`` with a drawn seed).

    Args:
        manifold: the manifold ``x`` lies on.
        x: the base points (any batch).
        relative_norm: if given, every point's vector is rescaled to norm
            ``relative_norm * |x|`` (``relative_norm`` where |x| = 0); a vector
            at rounding level (tangent space of dimension 0) stays zero.
    """
    v = manifold.random_tangent(x, generator=draw(generators(_TANGENTS)))
    if relative_norm is None:
        return v
    target = point_norms(manifold, x)
    target = torch.where(target > 0, target, torch.ones_like(target)) * relative_norm
    norm = point_norms(manifold, v)
    visible = norm > 1e3 * torch.finfo(v.dtype).eps * target
    scale = torch.where(visible, target / norm.clamp_min(torch.finfo(v.dtype).tiny), 0.0)
    return v * _per_point(manifold, x, scale)
