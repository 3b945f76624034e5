r"""User-defined constraint sets M = {x : c(x) = 0} from a torch (or sympy) function c.

A point has shape ``point_shape``; leading dimensions are a batch of independent
points (a weight of shape (out, in) with ``point_shape=(in,)`` puts each neuron on M).
With J = dc/dx (m x n, n the number of entries of a point) from autograd, or from
the user, or derived by sympy:

* tangent projection  $P_x v = v - J^\top (J J^\top)^{-1} J v$ (a Cholesky solve)
* SHAKE               $x' = y + J(x)^\top \lambda$ with $c(x') = 0$: Newton on the
  multipliers, $\lambda \leftarrow \lambda - \big(J(x') J(x)^\top\big)^{-1} c(x')$
* RATTLE              the tangent projection (one linear solve)
* projection          Gauss-Newton, $z \leftarrow z - J(z)^\top (J(z) J(z)^\top)^{-1} c(z)$
* retraction          $R_x(v) = \mathrm{project}(x + v)$ (first order: for tangent v,
  c(x + v) = O(|v|^2), so the Gauss-Newton correction is O(|v|^2))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from ..manifolds import ConvergenceError, Manifold, default_atol
from ..manifolds._roots import newton
from ..manifolds.base import Draw
from ._evaluations import EvaluationCache
from ._normal import NormalSolver
from ._sympy import SympyConstraint

__all__ = ["Implicit"]


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _tolerance(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number (or None for the dtype's)")
    return value


def _solve(a: Tensor, b: Tensor) -> Tensor:
    """a^{-1} b for a batch of m x m matrices (NaN where a is singular); m = 1 divides."""
    if a.shape[-1] == 1:
        return b / a
    out, info = torch.linalg.solve_ex(a, b)
    return torch.where((info == 0).reshape(-1, 1, 1), out, torch.nan)


class Implicit(Manifold):
    r"""The manifold {x : c(x) = 0} of a user's constraint function c: R^n -> R^m.

    ``c`` receives ONE point of shape ``point_shape`` and returns its m residuals as
    a 1-d tensor (a 0-d tensor for m = 1); it is vectorised over the batch with
    ``torch.func.vmap`` and differentiated with ``torch.func.jacrev``, so write it
    with torch operations only (no ``.item()``, no Python branches on values, no
    in-place writes to x). With ``batched=True``, ``c`` (and ``jacobian``) already
    accept leading batch dimensions and are called directly.

    The m constraints must be independent at every point of interest (J J^T
    positive definite); a dependent set raises ``ValueError`` naming the fix.

    Args:
        c: the constraint function.
        point_shape: the shape of one point, e.g. ``(3,)`` or ``(n, p)``.
        n: shorthand for ``point_shape=(n,)``.
        jacobian: optional dc/dx for one point, shape (m, *point_shape) (or (m, n));
            autograd is used when omitted.
        batched: ``c`` and ``jacobian`` take (*batch, *point_shape) themselves.
        name: a label used in reprs and error messages.
        shake_tol: SHAKE stops when max |c| <= shake_tol (``default_atol(dtype)`` if None).
        shake_maxiter: Newton iterations before ``ConvergenceError``.
        project_tol: the same for ``project`` (``default_atol(dtype)`` if None).
        project_maxiter: Gauss-Newton iterations before ``ConvergenceError``.
        rank_rtol: smallest accepted squared pivot of the Cholesky factor of the
            diagonally scaled Gram matrix J J^T (1 for orthogonal constraint
            normals, 0 for parallel ones); ``10 m eps(dtype)`` if None.
        symmetries: names of linear symmetry groups of M (see ``geodyn.testing.SYMMETRIES``,
            e.g. ``("orthogonal_last",)`` for a sphere) that the law suite then checks.

    Example:
        >>> import torch
        >>> torus = Implicit(
        ...     lambda x: (x[:2].norm() - 2.0) ** 2 + x[2] ** 2 - 0.25, n=3, name="torus"
        ... )
        >>> x = torus.random_point(5, 3, dtype=torch.float64)
        >>> bool(torus.residual(x) < 1e-10)
        True
    """

    name = "Implicit"

    def __init__(
        self,
        c: Callable[[Tensor], Tensor],
        *,
        point_shape: tuple[int, ...] | None = None,
        n: int | None = None,
        jacobian: Callable[[Tensor], Tensor] | None = None,
        batched: bool = False,
        name: str | None = None,
        shake_tol: float | None = None,
        shake_maxiter: int = 50,
        project_tol: float | None = None,
        project_maxiter: int = 100,
        rank_rtol: float | None = None,
        symmetries: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if not callable(c):
            raise ValueError(f"c must be a callable x -> c(x), got {type(c).__name__}")
        if jacobian is not None and not callable(jacobian):
            raise ValueError(f"jacobian must be callable or None, got {type(jacobian).__name__}")
        if (point_shape is None) == (n is None):
            raise ValueError("give exactly one of point_shape=(...) or n=<int>")
        if point_shape is None:
            assert n is not None  # exactly one of the two is given
            shape: tuple[int, ...] = (n,)
        else:
            shape = tuple(point_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(
                f"point_shape must be a non-empty tuple of positive ints, got {point_shape!r}"
                if n is None
                else f"n must be a positive int, got {n!r}"
            )
        self.c = c
        self.jacobian = jacobian
        self.batched = bool(batched)
        self.point_shape = shape
        self.ndim = len(shape)
        self.numel = math.prod(shape)
        self.name = name or cast(str, getattr(c, "__name__", "Implicit"))
        self.shake_tol = _tolerance(shake_tol, "shake_tol")
        self.shake_maxiter = _positive_int(shake_maxiter, "shake_maxiter")
        self.project_tol = _tolerance(project_tol, "project_tol")
        self.project_maxiter = _positive_int(project_maxiter, "project_maxiter")
        self.rank_rtol = _tolerance(rank_rtol, "rank_rtol")
        self.symmetries = tuple(symmetries)
        self._source: Any = c
        self._evaluations = EvaluationCache()

    @classmethod
    def from_sympy(cls, exprs: Any, symbols: Any, **kwargs: Any) -> Implicit:
        """The manifold {c(x) = 0} of sympy expressions, with a symbolic Jacobian.

        ``sympy.Matrix(exprs).jacobian(symbols)`` gives J; c and J are compiled by
        ``sympy.lambdify`` to torch functions that take the columns of a batch, so
        they run on any batch shape, dtype and device.

        Args:
            exprs: one sympy expression or a sequence / Matrix of them (the m constraints).
            symbols: the coordinates: a sequence of n Symbols (``point_shape=(n,)``), or a
                sympy Matrix / nested list of Symbols (``point_shape`` = its shape).
            **kwargs: passed to ``Implicit`` (``name``, tolerances, ``symmetries``, ...).

        Example:
            >>> import sympy
            >>> x, y, z = sympy.symbols("x y z")
            >>> sphere = Implicit.from_sympy([x**2 + y**2 + z**2 - 1], [x, y, z])
            >>> sphere.point_shape
            (3,)
        """
        for key in ("point_shape", "n", "jacobian", "batched"):
            if key in kwargs:
                raise ValueError(f"from_sympy derives {key} from exprs and symbols; drop {key}=")
        compiled = SympyConstraint(exprs, symbols)
        kwargs.setdefault("name", repr(compiled))
        manifold = cls(
            compiled.c,
            point_shape=compiled.point_shape,
            jacobian=compiled.jacobian,
            batched=True,
            **kwargs,
        )
        manifold._source = ("sympy", tuple(compiled.exprs), compiled.point_shape)
        return manifold

    # ------------------------------------------------------------------ identity
    def _params(self) -> tuple[Any, ...]:
        return (
            self._source,
            self.point_shape,
            self.shake_tol,
            self.shake_maxiter,
            self.project_tol,
            self.project_maxiter,
            self.rank_rtol,
            self.symmetries,
        )

    def extra_repr(self) -> str:
        return f"{self.name!r}, point_shape={self.point_shape}"

    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        if len(shape) < self.ndim or tuple(shape[len(shape) - self.ndim :]) != self.point_shape:
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs points of shape "
                f"{self.point_shape} in the trailing dimensions, i.e. (*batch, "
                f"{', '.join(map(str, self.point_shape))})"
            )
        return None

    # ------------------------------------------------------------------ evaluation
    def _flatten(self, x: Tensor, name: str) -> tuple[Tensor, tuple[int, ...]]:
        """x as (B, *point_shape) and the batch shape; checks shape and finiteness."""
        self.check_shape(tuple(x.shape), name)
        self.check_finite(x, name)
        batch = tuple(x.shape[: x.dim() - self.ndim])
        return x.reshape(-1, *self.point_shape), batch

    def _point_values(self, x: Tensor) -> Tensor:
        out = self.c(x)
        if not isinstance(out, Tensor) or out.dim() > 1:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"c must return the m residuals of one point as a 1-d tensor of shape (m,) "
                f"(or 0-d for m = 1), got {got} for a point of shape {self.point_shape}; "
                "stack the residuals with torch.stack([...]) or pass batched=True if c "
                "handles batches itself"
            )
        return out.reshape(-1)

    def _batch_values(self, xb: Tensor) -> Tensor:
        out = self.c(xb)
        size = xb.shape[0]
        if isinstance(out, Tensor) and tuple(out.shape) == (size,):
            out = out.unsqueeze(-1)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != size:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"c (batched=True) must map x of shape (B, *point_shape) to (B, m), got {got} "
                f"for B = {size}; keep the batch dimension first, or pass batched=False to "
                "write c for one point"
            )
        return out

    def _values(self, xb: Tensor) -> Tensor:
        if self.batched:
            return self._batch_values(xb)
        if xb.shape[0] == 0:  # vmap needs one point to learn m
            m = torch.func.vmap(self._point_values)(xb.new_zeros(1, *self.point_shape)).shape[-1]
            return xb.new_zeros(0, m)
        return torch.func.vmap(self._point_values)(xb)

    def _values_and_jacobian(self, xb: Tensor) -> tuple[Tensor, Tensor]:
        """c (B, m) and J (B, m, n) at a batch of points, each point's pair evaluated once.

        The last few batches' pairs are cached by value (``EvaluationCache``), so the
        verbs of one step that meet at a point share one evaluation.
        """
        cache = self._evaluations if EvaluationCache.usable(xb) else None
        hit = cache.get(xb) if cache is not None else None
        if hit is not None:
            return hit
        values, jac = self._evaluate(xb)
        if cache is not None:
            cache.put(xb, values, jac)
        return values, jac

    def _evaluate(self, xb: Tensor) -> tuple[Tensor, Tensor]:
        """c (B, m) and J (B, m, n), in one pass when autograd is used."""
        if xb.shape[0] == 0:
            values = self._values(xb)
            return values, xb.new_zeros(0, values.shape[-1], self.numel)
        if self.jacobian is not None:
            values = self._values(xb)
            jac = self.jacobian(xb) if self.batched else torch.func.vmap(self.jacobian)(xb)
            jac = self._check_jacobian(jac, values)
        elif self.batched:

            def summed(z: Tensor) -> tuple[Tensor, Tensor]:
                out = self._batch_values(z)
                return out.sum(0), out

            jac, values = torch.func.jacrev(summed, has_aux=True)(xb)
            jac = jac.movedim(0, 1).reshape(xb.shape[0], -1, self.numel)
        else:

            def twice(z: Tensor) -> tuple[Tensor, Tensor]:
                out = self._point_values(z)
                return out, out

            jac, values = torch.func.vmap(torch.func.jacrev(twice, has_aux=True))(xb)
            jac = jac.reshape(xb.shape[0], -1, self.numel)
        self._check_output_finite(values, jac)
        return values, jac

    def _check_jacobian(self, jac: Any, values: Tensor) -> Tensor:
        size, m = values.shape
        allowed = {(size, m, *self.point_shape), (size, m, self.numel)}
        if m == 1:
            allowed |= {(size, *self.point_shape), (size, self.numel)}
        if not isinstance(jac, Tensor) or tuple(jac.shape) not in allowed:
            got = tuple(jac.shape) if isinstance(jac, Tensor) else type(jac).__name__
            per_point = "(B, " if self.batched else "("
            raise ValueError(
                f"jacobian must return dc/dx of shape {per_point}m, *point_shape) = "
                f"{per_point}{m}, {', '.join(map(str, self.point_shape))}) to match c's "
                f"{m} residual(s), got {got}"
            )
        return jac.reshape(size, m, self.numel).to(values.dtype)

    def _check_output_finite(self, values: Tensor, jac: Tensor | None = None) -> None:
        finite = torch.isfinite(values).all()
        if jac is not None:
            finite = finite & torch.isfinite(jac).all()
        if not bool(finite):
            what = "c(x)" if not bool(torch.isfinite(values).all()) else "the Jacobian of c"
            raise ValueError(
                f"{self.name}: {what} has NaN or Inf entries at a finite x; c must be finite "
                "and differentiable on and near M (e.g. guard sqrt and division at 0, or pass "
                "points away from that set); if x is huge, c overflowed: after a step, reduce "
                "the step size lr"
            )

    def _rank_rtol(self, jac: Tensor) -> float:
        """``rank_rtol``, by default 10 m eps for m constraints."""
        if self.rank_rtol is not None:
            return self.rank_rtol
        return 10 * jac.shape[-2] * torch.finfo(jac.dtype).eps

    def _solver(self, jac: Tensor, where: str) -> NormalSolver:
        m = jac.shape[-2]
        rtol = self._rank_rtol(jac)
        solver = NormalSolver(jac, rtol)
        if not solver.any_degenerate():
            return solver
        if m == 1:
            raise ValueError(
                f"{self.name}: the gradient of c vanishes at {where}, so M has no normal there "
                "(e.g. x = 0 for a sphere): keep points away from that set, e.g. start from "
                "random_point(...) or project a nonzero guess"
            )
        raise ValueError(
            f"{self.name}: the {m} constraint normals (rows of the Jacobian of c) are "
            f"linearly dependent at {where} (smallest squared pivot of the scaled Gram "
            f"matrix {solver.worst_pivot():.1e} < rank_rtol {rtol:.1e}); the constraints "
            "must be independent: drop a repeated or implied constraint, or keep points "
            "away from where a gradient of c vanishes"
        )

    def _tol(self, value: float | None, dtype: torch.dtype) -> float:
        return default_atol(dtype) if value is None else value

    # ------------------------------------------------------------------ geodyn verbs
    def constraint(self, x: Tensor) -> Tensor:
        """c(x) of shape (*batch, m); differentiable."""
        xb, batch = self._flatten(x, "x")
        hit = self._evaluations.get(xb) if EvaluationCache.usable(xb) else None
        values = hit[0] if hit is not None else self._values(xb)
        self._check_output_finite(values)
        return values.reshape(*batch, values.shape[-1])

    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        r"""P_x v = v - J^T (J J^T)^{-1} J v, by a Cholesky solve of the m x m Gram matrix."""
        xb, _ = self._flatten(x, "x")
        if v.shape != x.shape:
            raise ValueError(f"v has shape {tuple(v.shape)} but x has {tuple(x.shape)}")
        _, jac = self._values_and_jacobian(xb)
        vb = v.reshape(-1, self.numel)
        return (vb - self._solver(jac, "x").normal_component(vb)).reshape(v.shape)

    def project(self, x: Tensor) -> Tensor:
        r"""The nearest point of M to x where it is found, else the Gauss-Newton foot.

        The foot: z <- z - J^T (J J^T)^{-1} c(z) from z = x, the least-norm
        correction of the linearised constraint, lands on M. From the foot,
        z <- x - J^T (J J^T)^{-1} (c(z) + J (x - z)) has as fixed points the
        first-order conditions of the nearest point (c(z) = 0 and x - z normal to
        M); it converges at a rate of about distance x curvature. Unless every
        point settles within ``project_maxiter`` steps, on M and no farther from x
        than its foot, each point that did not keeps its foot. Raises
        ``ConvergenceError`` when the foot misses ``project_tol``.
        """
        foot = self._foot(x)
        tol = self._tol(self.project_tol, x.dtype)
        anchor = x.reshape(-1, self.numel)
        start = foot.reshape(-1, self.numel)
        z, still = start, None  # still: per point, whether its last step was below tol
        for _ in range(self.project_maxiter):
            values, jac = self._values_and_jacobian(z.reshape(-1, *self.point_shape))
            solver = NormalSolver(jac, self._rank_rtol(jac))
            if solver.any_degenerate():
                break
            following = anchor - solver.min_norm_step(
                values + (jac @ (anchor - z).unsqueeze(-1)).squeeze(-1)
            )
            move = (following - z).norm(dim=-1)
            z = following
            still = move <= tol * (1 + z.norm(dim=-1))
            if not bool(torch.isfinite(move).all()) or bool(still.all()):
                break
        if still is None:
            return foot
        values, _ = self._values_and_jacobian(z.reshape(-1, *self.point_shape))
        nearer = (z - anchor).norm(dim=-1) <= (start - anchor).norm(dim=-1)
        settled = (values.abs().amax(-1) <= tol) & still & nearer
        return torch.where(settled.unsqueeze(-1), z, start).reshape(x.shape)

    def _foot(self, x: Tensor) -> Tensor:
        """Gauss-Newton z <- z - J^T (J J^T)^{-1} c(z) from z = x, to ``project_tol``."""
        self._flatten(x, "x")  # checks the shape and finiteness
        tol = self._tol(self.project_tol, x.dtype)

        def step(z: Tensor, values: Tensor, jac: Tensor) -> Tensor:
            where = "a Gauss-Newton iterate of project(x)"
            return z - self._solver(jac, where).min_norm_step(values)

        return self._newton(
            x,
            step,
            tol,
            self.project_maxiter,
            f"{self.name}.project: Gauss-Newton missed project_tol {tol:.1e}; x may be "
            "far from M or near where the constraints degenerate: start closer to M (after a "
            "step: reduce the step size lr), or raise project_maxiter",
        )

    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        r"""x' = y + J(x)^T lambda on M, by Newton on the multipliers lambda.

        F(lambda) = c(y + J(x)^T lambda) has Jacobian J(x') J(x)^T, so each step is
        one m x m solve; the iteration starts at lambda = 0 and finds the
        multipliers nearest zero. ``x`` must lie on M.
        """
        xb, batch = self._flatten(x, "x")
        if y.shape != x.shape:
            raise ValueError(f"y has shape {tuple(y.shape)} but x has {tuple(x.shape)}")
        self.check_finite(y, "y")
        tol = self._tol(self.shake_tol, x.dtype)
        values0, jac0 = self._values_and_jacobian(xb)
        self._require_on_manifold(values0, max(10 * tol, default_atol(x.dtype)), "shake")
        self._solver(jac0, "x")
        normals = jac0.mT

        def step(z: Tensor, values: Tensor, jac: Tensor) -> Tensor | None:
            multipliers = _solve(jac @ normals, values.unsqueeze(-1))
            if not bool(torch.isfinite(multipliers).all()):
                return None
            return z - (normals @ multipliers).squeeze(-1)

        return self._newton(
            y,
            step,
            tol,
            self.shake_maxiter,
            f"{self.name}.shake: no multipliers along the normal space at x put y back "
            f"on M within shake_tol {tol:.1e} (y is too far from x: reduce the step size lr, "
            "or raise shake_maxiter)",
        )

    def _newton(
        self,
        start: Tensor,
        step: Callable[[Tensor, Tensor, Tensor], Tensor | None],
        tol: float,
        maxiter: int,
        failure: str,
    ) -> Tensor:
        """Newton iterates z <- step(z, c(z), J(z)) from ``start`` until max |c(z)| <= tol.

        The last step is taken even on success: it squares the residual.
        """
        def residual(z: Tensor) -> tuple[Tensor, Tensor]:
            return self._values_and_jacobian(z.reshape(-1, *self.point_shape))

        z = newton(
            residual,
            step,
            start.reshape(-1, self.numel),
            tol=tol,
            maxiter=maxiter,
            polish=True,
            failure=failure,
        )
        return z.reshape(start.shape)

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        r"""R_x(v): the Gauss-Newton foot of x + v (see ``project``), a first-order retraction.

        Unlike SHAKE along the normal space at x, which has no solution once v is
        large against the curvature radius, Gauss-Newton from x + v lands on M for
        any step that does not reach a point where the constraints degenerate.
        """
        self.check_shape(tuple(x.shape), "x")
        if v.shape != x.shape:
            raise ValueError(f"v has shape {tuple(v.shape)} but x has {tuple(x.shape)}")
        return self._foot(x + v)

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        """A standard Gaussian sample projected onto M (not a uniform sample of M)."""
        x = draw.normal(shape)
        try:
            return self.project(x)
        except (ConvergenceError, ValueError) as err:
            raise ValueError(
                f"{self.name}.random_point: projecting a standard Gaussian sample onto M "
                f"failed ({err}); M may lie far from the origin or c may degenerate there: "
                "build a point near M yourself and call project(x0)"
            ) from err

    # ------------------------------------------------------------------ validation
    def _require_on_manifold(self, values: Tensor, atol: float, verb: str) -> None:
        residual = float(values.abs().max()) if values.numel() else 0.0
        if residual > atol:
            raise ValueError(
                f"{self.name}.{verb}: x is not on M (constraint residual {residual:.3e} > "
                f"{atol:.1e}); {verb} needs the old point on M: start from M.project(x) "
                "or M.random_point(...)"
            )

    def check_point(self, x: Tensor, atol: float | None = None) -> tuple[bool, str | None]:
        """Whether x has points of shape ``point_shape``, is finite and on M; the reason if not."""
        try:
            ok, reason = super().check_point(x, atol)
        except ValueError as err:
            return False, str(err)
        if not ok and reason is not None and "residual" in reason:
            reason += "; move it onto M with project(x)"
        return ok, reason
