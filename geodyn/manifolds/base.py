"""The manifold interface every geodyn integrator talks to.

A manifold is a constraint set M = {x : c(x) = 0} (or c(x) <= 0 for an
inequality set) for one tensor. The trailing ``ndim`` dimensions of a tensor
form one point; any leading dimensions are a batch of independent points.
Every method is batched over those leading dimensions and preserves dtype and
device. The metric is the Euclidean metric of the embedding unless a subclass
says otherwise, so the Riemannian gradient is ``proj_tangent(x, grad)``.

Subclasses are also :class:`geoopt.Manifold` objects: ``projx``, ``proju``,
``retr``, ``egrad2rgrad``, ``transp`` and ``retr_transp`` forward to the geodyn
verbs, so geodyn manifolds run inside ``geoopt.ManifoldParameter`` and geoopt's
optimizers unchanged.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import geoopt
import torch
from torch import Tensor

__all__ = [
    "ConvergenceError",
    "Draw",
    "FusedStep",
    "Manifold",
    "Scratch",
    "all_finite",
    "default_atol",
    "fresh",
    "rattle_owned",
    "shake_drift",
]

_ATOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


def default_atol(dtype: torch.dtype) -> float:
    """Tolerance on the constraint residual below which a point counts as on M.

    A complex dtype has its real part's tolerance (complex64: float32's).
    """
    return _ATOL.get(dtype.to_real(), 1e-5)


def all_finite(*tensors: Tensor) -> bool:
    """Whether every entry of every tensor is finite.

    One sum per tensor (a NaN or Inf entry makes the sum non-finite) and one
    host sync; the entrywise test runs only when a sum is not finite, which a
    sum of large finite entries can also be (overflow).
    """
    sums = [t.sum() for t in tensors if t.numel()]
    if not sums or bool(torch.isfinite(torch.stack(sums)).all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _out(t: Tensor | None) -> dict[str, Tensor]:
    """``out=t`` for a torch op where t is given, else nothing (a new tensor)."""
    return {} if t is None else {"out": t}


Scratch = Callable[[str, tuple[int, ...], Tensor], Tensor | None]
"""``scratch(name, shape, like)``: an uninitialised contiguous tensor of ``shape`` with
the dtype and device of ``like`` for a fast path's temporary ``name`` (nothing else
reads it until the fast path's write), or ``None``: the op allocates its result. A
caller that keeps the tensors from step to step (``RiemannianSGD``) hands out the same
memory for the same name every step: on a CPU, fresh memory for a parameter-sized
temporary page-faults once the allocator has handed it back to the system, which can
cost more than the pass that fills it."""


def fresh(name: str, shape: tuple[int, ...], like: Tensor) -> None:
    """The :data:`Scratch` that keeps nothing: every op allocates its result."""
    return None


def momentum_sum(
    old: Tensor | None, g: Tensor, momentum: float, dampening: float, scratch: Scratch = fresh
) -> Tensor:
    """b' = mu b_old + (1 - delta) g, written into ``scratch("b", ...)``, or g itself
    without b_old: a fast path's first pass."""
    if old is None:
        return g
    out = _out(scratch("b", tuple(g.shape), g))
    if dampening:
        return torch.mul(old, momentum, **out).add_(g, alpha=1 - dampening)
    return torch.add(g, old, alpha=momentum, **out)


@dataclass(frozen=True)
class FusedStep:
    """A step as reductions and one write (:meth:`Manifold.fused_momentum_step`,
    :meth:`Manifold.fused_drift`).

    ``checks``: a small tensor (a few numbers per point) whose entries are all finite
    only if the write's outputs are finite and the fast path's accuracy holds; when one
    is not, the caller takes the generic path instead. ``write(x_out, buf_out)`` returns
    (x', b), written into ``x_out`` / ``buf_out`` when given (they may be the tensors the
    step read, the write reading them before it overwrites them, except where the fast
    path says otherwise), else into new tensors.
    """

    checks: Tensor
    write: Callable[[Tensor | None, Tensor | None], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Draw:
    """Where a random point is drawn: its dtype, device and random generator.

    ``None`` fields take torch's defaults. :meth:`Manifold.random_point` hands one
    to :meth:`Manifold._sample_point`, which draws its tensors by :meth:`normal` and
    :meth:`uniform`.
    """

    dtype: torch.dtype | None = None
    device: torch.device | str | None = None
    generator: torch.Generator | None = None

    def normal(self, shape: tuple[int, ...]) -> Tensor:
        """Standard Gaussian entries N(0, 1) (complex dtype: N(0, 1/2) per part)."""
        return torch.randn(shape, dtype=self.dtype, device=self.device, generator=self.generator)

    def uniform(self, shape: tuple[int, ...]) -> Tensor:
        """Entries uniform on [0, 1)."""
        return torch.rand(shape, dtype=self.dtype, device=self.device, generator=self.generator)


class ConvergenceError(RuntimeError):
    """An iterative constraint solve (SHAKE, projection) missed its tolerance.

    Attributes ``residual`` (the final max |c|) and ``iterations`` say how far it got.
    """

    def __init__(self, message: str, *, residual: float, iterations: int) -> None:
        super().__init__(f"{message} (residual {residual:.3e} after {iterations} iterations)")
        self.residual = residual
        self.iterations = iterations


class Manifold(geoopt.Manifold):
    """Base class of every geodyn manifold.

    Subclasses set ``ndim`` and ``name`` and implement ``constraint``,
    ``project``, ``proj_tangent``, ``retract`` and ``shake``; the rest has
    defaults valid for the embedded (Euclidean) metric.

    Declared capabilities (class attributes or properties; a subclass declares what
    differs from the default, a :class:`~geodyn.manifolds.Product` computes them from
    its factors):
        ndim: number of trailing dimensions that form one point.
        is_inequality: ``True`` when some constraint is an inequality c_i(x) <= 0 (the
            norm ball); the tangent space is then a cone at boundary points.
            :meth:`inequality_mask` says which constraints.
        linear_transport: ``True`` when ``transp(x, y, v) = rattle(y, v) = P_y v`` with
            P_y linear (default ``True``; an inequality's cone, a parallel transport or
            a foreign transport declares ``False``).
        coupled_dims: the axes (negative) whose entries one point couples; default the
            last ``ndim``.
        lifted: ``True`` for a manifold that stores a lifted point z of a bounded weight
            w = :meth:`weight` (z), z = :meth:`lift` (w), |w| <= :attr:`bound` (the
            circle lift).
        symmetries: names of linear group actions every verb commutes with
            (see ``geodyn.testing.SYMMETRIES``), checked by the law suite.
        fused_entrywise: ``True`` when :meth:`fused_momentum_step` is entrywise work and
            reductions only, so that a compiled commit computes it again more cheaply
            than it stores it (``RiemannianSGD(compiled=True)``); default ``False``, and a
            fast path of matrix products and factorisations (Stiefel) runs eagerly.
    """

    ndim: int = 0
    name: str = "Manifold"
    reversible = False
    is_inequality: bool = False
    linear_transport: bool = True
    lifted: bool = False
    symmetries: tuple[str, ...] = ()
    fused_entrywise: bool = False

    def __init__(self) -> None:
        super().__init__()

    # ------------------------------------------------------------------ geodyn verbs
    @abc.abstractmethod
    def constraint(self, x: Tensor) -> Tensor:
        """Residual c(x) of shape ``(*batch, m)``: zero on M (``<= 0`` for inequality sets)."""

    @abc.abstractmethod
    def project(self, x: Tensor) -> Tensor:
        """A point of M near ``x`` (the nearest point where that is cheap)."""

    @abc.abstractmethod
    def proj_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """Orthogonal projection of ``v`` onto the tangent space T_x M."""

    @abc.abstractmethod
    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """A retraction R_x(v): R_x(0) = x, dR_x(0) = id, R_x(v) in M."""

    @abc.abstractmethod
    def shake(self, x: Tensor, y: Tensor) -> Tensor:
        """SHAKE: the point y + G(x)^T lambda on M, multipliers along the normal space at ``x``."""

    def rattle(self, x: Tensor, p: Tensor) -> Tensor:
        """RATTLE: momentum ``p`` projected onto T_x M (the embedded metric's ``proj_tangent``)."""
        return self.proj_tangent(x, p)

    def drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
    ) -> tuple[Tensor, Tensor]:
        r"""The A sub-step: move x for time h along momentum p, staying on M; returns (x', p').

        SHAKE then RATTLE: $x' = \mathrm{shake}(x, x + h p)$,
        $p' = \mathrm{rattle}_{x'}\big((x' - x)/h\big)$. With ``rattle=False`` p' is left
        unprojected: an integrator passes that only under :attr:`linear_transport` when
        its next sub-step projects p' at x' anyway. Subclasses with an exact flow (the
        circle lift's rotation, the ball's elastic wall) override it.
        """
        return shake_drift(self, x, p, h, rattle=rattle)

    def fused_momentum_step(
        self, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
        dampening: float, scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""Fast path of the folded momentum step, or ``None`` (the default: none declared).

        The momentum step of :func:`geodyn.functional.rsgd_step` (no Nesterov momentum, no
        weight decay): with :attr:`linear_transport` the folded
        $b = P_x(\mu b_{old} + (1 - \delta) g)$ ($b = P_x g$ without ``old``),
        $x' = R_x(-\eta b)$; otherwise the manifold's own transport (the circle lift's
        rotation). It is split into what the step computes before writing (nothing is
        written yet) and one elementwise write, so that a caller can check ``checks``
        first and then write $x'$ and $b$ straight into the parameter and its buffer.

        ``scratch`` (:data:`Scratch`) gives the step's temporaries their memory: kept
        by the caller from step to step, or new ones (:func:`fresh`, the default).
        """
        return None

    def fused_proj_tangent_(self, x: Tensor, v: Tensor) -> Tensor | None:
        r"""Fast path of $v \leftarrow P_x v$ in place, or ``None`` (the default: none
        declared, nothing written).

        Returns checks: a small tensor, all finite only if x and v were finite and the
        written $P_x v$ is (``Constrained``'s gradient projection). It is RATTLE's in-place
        form too (the splitting letters on momenta they made): a manifold whose
        :meth:`rattle` is not its ``proj_tangent`` declares none.
        """
        return None

    def fused_put_back(self, x: Tensor, y: Tensor, vectors: Sequence[Tensor]) -> Tensor | None:
        r"""Fast path of ``Constrained``'s put-back in place, or ``None`` (the default:
        none declared, nothing written).

        $y \leftarrow R_x\big(P_x(y - x)\big)$, then each $v$ of ``vectors``
        $\leftarrow \mathcal{T}_{x \to y} v$ (:meth:`transp`, to the new y). Returns checks:
        a small tensor, all finite only if x, y and the vectors were finite and every
        written value is.
        """
        return None

    def fused_drift(
        self, x: Tensor, p: Tensor, h: float, *, rattle: bool = True, project: bool = False,
        scratch: Scratch = fresh,
    ) -> FusedStep | None:
        r"""Fast path of :meth:`drift`, or ``None`` (the default: none declared).

        Like :meth:`fused_momentum_step`, what the step computes before writing (it raises
        what :meth:`drift` raises, :class:`ConvergenceError` for a SHAKE without a
        multiplier) and one write: ``write(x_out, p_out)`` returns
        ``drift(x, q, h, rattle=rattle)``'s (x', p'), with $q = P_x p$ under ``project``
        (a projection a caller left to this step, with :attr:`linear_transport`) and
        q = p otherwise, written into ``x_out`` (not x itself: the write reads x to the
        end) and ``p_out`` (which may be p) when given. ``checks`` are all finite only if
        the outputs are; when one is not, the caller takes :meth:`drift` instead. Its
        temporaries take their memory from ``scratch``, and the write may read them: a
        caller hands that scratch to no other fast path of the parameter between the
        proposal and the write.
        """
        return None

    def _inherits(self, owner: type, *verbs: str) -> bool:
        """Whether this manifold takes each of ``verbs`` from ``owner`` unchanged. A fast
        path rewrites the verbs of the step it replaces: it applies only then, and a
        subclass that overrides one of them takes the generic step, which calls its own."""
        cls = type(self)
        return all(getattr(cls, verb) is getattr(owner, verb) for verb in verbs)

    @property
    def coupled_dims(self) -> tuple[int, ...]:
        """The axes (negative) whose entries one point couples: the last ``ndim``."""
        return tuple(range(-self.ndim, 0))

    def inequality_mask(self, x: Tensor) -> Tensor:
        """Which entries of ``constraint(x)`` are inequalities c_i(x) <= 0 (bool, same shape)."""
        c = self.constraint(x)
        return torch.full(c.shape, self.is_inequality, dtype=torch.bool, device=c.device)

    # ------------------------------------------------------------------ lifted points
    @property
    def bound(self) -> float:
        """The bound |w| <= bound that a lifted manifold's weights obey."""
        raise NotImplementedError(f"{self.name} is not a lifted manifold (lifted = False)")

    def lift(self, w: Tensor) -> Tensor:
        """The lifted point z of weights ``w`` (|w| <= bound), for a lifted manifold."""
        raise NotImplementedError(f"{self.name} is not a lifted manifold (lifted = False)")

    def weight(self, z: Tensor) -> Tensor:
        """The weights w of a lifted point ``z``, for a lifted manifold."""
        raise NotImplementedError(f"{self.name} is not a lifted manifold (lifted = False)")

    def inner(
        self, x: Tensor, u: Tensor, v: Tensor | None = None, *, keepdim: bool = False
    ) -> Tensor:
        """<u, v>_x summed over the point's dimensions (embedded metric); v = u if omitted."""
        prod = u * u if v is None else u * v
        if self.ndim == 0:
            return prod
        dims = tuple(range(-self.ndim, 0))
        return prod.sum(dim=dims, keepdim=keepdim)

    def random_point(
        self,
        *shape: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """A random point of M of the given shape (batch dimensions included).

        Checks ``shape``, then draws with :meth:`_sample_point`, which each manifold
        implements with its own law (this default: a Gaussian, projected onto M).
        """
        shape = tuple(shape)
        self.check_shape(shape, "shape")
        return self._sample_point(shape, Draw(dtype, device, generator))

    def _sample_point(self, shape: tuple[int, ...], draw: Draw) -> Tensor:
        """The draw behind :meth:`random_point`, for a ``shape`` already checked."""
        return self.project(draw.normal(shape))

    @property
    def project_is_nearest(self) -> bool:
        """Whether ``project`` returns a nearest point of M (the law suite then checks it).

        False unless a subclass declares it: a projection by an iterative solve is
        in general only a nearby point.
        """
        return False

    def random_tangent(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A Gaussian vector in T_x M."""
        v = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        return self.proj_tangent(x, v)

    def residual(self, x: Tensor) -> Tensor:
        """max |c(x)| over the whole tensor, as a 0-d tensor (0 for an unconstrained set)."""
        c = self.constraint(x)
        if self.is_inequality:
            c = torch.where(self.inequality_mask(x), c.clamp(min=0), c)
        if c.numel() == 0:
            return x.new_zeros(())
        return c.abs().max()

    def check_point(self, x: Tensor, atol: float | None = None) -> tuple[bool, str | None]:
        """Whether ``x`` has a valid shape, is finite and lies on M; the reason if not."""
        reason = self.shape_error(tuple(x.shape), "x")
        if reason is not None:
            return False, reason
        if not all_finite(x):
            return False, f"x has non-finite entries; {self.name} needs finite values"
        tol = default_atol(x.dtype) if atol is None else atol
        res = float(self.residual(x))
        if res > tol:
            return False, f"x is not on {self!r}: constraint residual {res:.3e} > atol {tol:.1e}"
        return True, None

    # ------------------------------------------------------------------ validation
    def shape_error(self, shape: tuple[int, ...], name: str) -> str | None:
        """Why a tensor of ``shape`` cannot hold points of M, or ``None`` if it can."""
        if len(shape) < max(self.ndim, 1):
            return (
                f"{name} has shape {tuple(shape)} but {self.name} needs at least "
                f"{max(self.ndim, 1)} dimension(s); reshape it (a single vector is shape (n,))"
            )
        return None

    def check_shape(self, shape: tuple[int, ...], name: str = "x") -> None:
        """Raise ``ValueError`` naming ``name`` if ``shape`` cannot hold points of M."""
        reason = self.shape_error(tuple(shape), name)
        if reason is not None:
            raise ValueError(reason)

    def check_finite(self, x: Tensor, name: str) -> None:
        """Raise ``ValueError`` naming ``name`` if ``x`` has NaN or Inf entries."""
        if not all_finite(x):
            raise ValueError(
                f"{name} has NaN or Inf entries; {self.name} needs finite input "
                "(check the learning rate and the data)"
            )

    # ------------------------------------------------------------------ identity
    def _params(self) -> tuple[Any, ...]:
        """The constructor arguments that define this manifold (equality, hashing, repr)."""
        return ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._params() == other._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._params()))

    def extra_repr(self) -> str:
        return ", ".join(repr(p) for p in self._params())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    # ------------------------------------------------------------------ geoopt interface
    def projx(self, x: Tensor) -> Tensor:
        return self.project(x)

    def proju(self, x: Tensor, u: Tensor) -> Tensor:
        return self.proj_tangent(x, u)

    def egrad2rgrad(self, x: Tensor, u: Tensor) -> Tensor:
        return self.proj_tangent(x, u)

    def retr(self, x: Tensor, u: Tensor) -> Tensor:
        return self.retract(x, u)

    def expmap(self, x: Tensor, u: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{self.name} has no closed-form exponential map; use retract(x, v)"
        )

    def transp(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Vector transport by projection onto T_y M."""
        return self.proj_tangent(y, v)

    def retr_transp(self, x: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        y = self.retract(x, u)
        return y, self.transp(x, y, v)

    def _check_shape(self, shape: tuple[int, ...], name: str) -> tuple[bool, str | None]:
        reason = self.shape_error(tuple(shape), name)
        return reason is None, reason

    def _check_point_on_manifold(
        self, x: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        return self.check_point(x, atol=atol)

    def _check_vector_on_tangent(
        self, x: Tensor, u: Tensor, *, atol: float = 1e-5, rtol: float = 1e-5
    ) -> tuple[bool, str | None]:
        err = float((u - self.proj_tangent(x, u)).abs().max()) if u.numel() else 0.0
        if err > atol + rtol * float(u.abs().max()):
            return False, f"u is not tangent at x: normal component {err:.3e}"
        return True, None


def shake_drift(
    manifold: Manifold, x: Tensor, p: Tensor, h: float, *, rattle: bool = True
) -> tuple[Tensor, Tensor]:
    r"""SHAKE + RATTLE: $x' = \mathrm{shake}(x, x + h p)$, $p' = \mathrm{rattle}_{x'}((x' - x)/h)$.

    The default :meth:`Manifold.drift` (``rattle=False`` leaves p' unprojected).
    """
    x_new = manifold.shake(x, torch.add(x, p, alpha=h))
    p_new = torch.sub(x_new, x).div_(h)
    return x_new, rattle_owned(manifold, x_new, p_new) if rattle else p_new


def rattle_owned(manifold: Manifold, x: Tensor, v: Tensor) -> Tensor:
    """rattle_x(v) for a v the caller made and may overwrite: in place where the manifold
    declares the fused form (:meth:`Manifold.fused_proj_tangent_`), else ``manifold.rattle``."""
    return v if manifold.fused_proj_tangent_(x, v) is not None else manifold.rattle(x, v)
