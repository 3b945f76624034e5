r"""Differentiable maps from a free square matrix onto the orthogonal group O(k).

* Cayley:        R = (I - S)^{-1} (I + S),  S = U - U^T,  U the strictly upper part of A.
  For skew S the factors commute, so this equals (I + S)(I - S)^{-1}; I - S is
  always invertible (its eigenvalues are 1 - i lambda with lambda real).
* Gram-Schmidt:  the rows of A orthonormalised in order,
  r_i = u_i / |u_i|,  u_i = a_i - sum_{j < i} <a_i, r_j> r_j.

Both are computed in float64 and cast back, so a float32 R is orthogonal to the
rounding floor of float32 (max |R^T R - I| about 4e-7) rather than to the solver's
accuracy (about 1e-6).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cayley", "gram_schmidt"]


def cayley(a: Tensor) -> Tensor:
    r"""Cayley map of the skew part of ``a``: R = (I - S)^{-1}(I + S), S = U - U^T, U = triu(A, 1).

    Args:
        a: free matrices of shape ``(..., k, k)``; only the strictly upper triangle is used.

    Returns:
        Orthogonal matrices of the same shape; ``a = 0`` gives the identity.
    """
    upper = torch.triu(a.double(), diagonal=1)
    skew = upper - upper.mT
    eye = torch.eye(a.shape[-1], dtype=skew.dtype, device=a.device)
    return torch.linalg.solve(eye - skew, eye + skew).to(a.dtype)


def gram_schmidt(a: Tensor) -> Tensor:
    r"""Gram-Schmidt orthonormalisation of the rows of ``a``, computed through a QR factorisation.

    With A^T = Q T (Householder QR), the columns of Q span the same nested subspaces as the
    rows of A, and classical Gram-Schmidt is the unique such factorisation whose triangular
    factor has a positive diagonal. Flipping the signs, R = (Q D)^T with D = sign(diag T),
    reproduces Gram-Schmidt row by row (the first row of R is a_1/|a_1|, and so on) for
    full-rank ``a``, and is differentiable where Gram-Schmidt is.

    Args:
        a: free matrices of shape ``(..., k, k)`` with linearly independent rows.

    Returns:
        Orthogonal matrices of the same shape whose rows are the orthonormalised rows of ``a``.
    """
    q, t = torch.linalg.qr(a.double().mT)
    diag = torch.diagonal(t, dim1=-2, dim2=-1)
    sign = torch.where(diag < 0, -1.0, 1.0).to(q.dtype)
    return (q * sign.unsqueeze(-2)).mT.to(a.dtype)
