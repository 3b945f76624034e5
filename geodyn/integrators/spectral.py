r"""Steepest descent under the spectral norm: Muon, on flat space or a manifold, and its
Stiefel (Spel, manifold Muon) and fixed-norm (hyperball) forms.

Each class is a loop over stacks of like parameters around one function of
:mod:`geodyn.functional.spectral`; see there for the equations. With no manifold,
:class:`Muon` is :class:`torch.optim.Muon` (same coefficients, momentum and Nesterov
conventions, learning-rate adjustment and decoupled weight decay).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypedDict

import torch
from torch import Tensor

from ..functional.spectral import hyperball_step, manifold_muon_step, muon_step
from ..manifolds import Stiefel
from ..manifolds.orthogonalize import _coefficients
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._stacks import Stack, declared_manifold, manifold_of, stacks

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11

__all__ = ["ManifoldMuon", "MsignOptions", "Muon", "MuonHyperball", "Spel"]


class MsignOptions(TypedDict, total=False):
    """The momentum and orthogonalisation keywords of :class:`Muon` (its defaults)."""

    momentum: float
    nesterov: bool
    ns_coefficients: str | tuple[float, float, float]
    eps: float
    ns_steps: int
    msign_dtype: torch.dtype | None
    nonfinite: str


class _SpelOptions(MsignOptions, total=False):
    adjust_lr_fn: str | None


def _check_matrices(group: dict[str, Any], name: str) -> None:
    for p in group["params"]:
        if p.dim() < 2:
            raise ValueError(
                f"{name} steps matrices (..., n, p); a parameter has shape {tuple(p.shape)}: "
                "give vectors and scalars to another optimizer (e.g. torch.optim.AdamW)"
            )


def _check_spectral(group: dict[str, Any]) -> None:
    check_step_size(group)
    check_nonnegative(group, "momentum", "eps")
    if not group["momentum"] < 1:
        raise ValueError(f"momentum must be in [0, 1), got {group['momentum']}")
    _coefficients(group["ns_coefficients"])
    steps = group["ns_steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"ns_steps must be a positive int, got {steps!r}")


class _Spectral(GeometricOptimizer):
    """Stacks of same-shaped matrices with a ``momentum_buffer``; subclasses give the step."""

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        msign_dtype: torch.dtype | None = None,
        nonfinite: str = "raise",
    ) -> None:
        self.msign_dtype = msign_dtype
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _stacks(self) -> list[Stack]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        def key(p: Tensor) -> tuple[Any, ...]:
            return tuple(p.shape), "momentum_buffer" in self.state.get(p, {})

        return stacks(self.param_groups, select, key=key)

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        proposals = []
        for stack in self._stacks():
            first = stack.params[0]
            x_flat = stack.gather(stack.params)
            matrix = (-1, *first.shape[-2:])
            x = x_flat.reshape(matrix)
            g = stack.gather([p.grad for p in stack.params]).reshape(matrix)  # type: ignore[misc]
            check_finite(stack, g, "the gradient")
            buf = None
            if "momentum_buffer" in self.state.get(first, {}):
                buf = stack.gather([self.state[p]["momentum_buffer"] for p in stack.params])
                buf = buf.reshape(matrix)
            x_new, buf_new = self._step(stack, x, g, buf)
            state = {"momentum_buffer": buf_new.reshape(x_flat.shape)}
            proposals.append(Proposal(stack, x_new.reshape(x_flat.shape), state))
        return proposals

    def _step(
        self, stack: Stack, x: Tensor, g: Tensor, buf: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _msign_options(self, group: dict[str, Any]) -> dict[str, Any]:
        """The step size, momentum and msign keywords of a Muon-type step function."""
        return dict(
            lr=group["lr"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            coefficients=group["ns_coefficients"],
            ns_steps=group["ns_steps"],
            eps=group["eps"],
            dtype=self.msign_dtype,
        )


class Muon(_Spectral):
    r"""Muon: momentum orthogonalised by Newton-Schulz (``msign``), on flat space or on M.

    Without a manifold this is :class:`torch.optim.Muon` to rounding. On a manifold
    (a group's ``manifold`` or ``param.manifold``) the gradient and buffer are
    Riemannian and the step is x' = R_x(-lr r msign(u)); give M a projection-type
    retraction (``Stiefel("newton-schulz")``, ``"polar"``, spheres) so that the normal
    part of msign(u) moves x only at second order. :class:`Spel` is this on Stiefel.

    Args:
        params: matrices (..., n, p), or param groups; a group may set every
            hyperparameter below and ``manifold``.
        lr: learning rate eta.
        weight_decay: decoupled weight decay w (x <- x (1 - lr w)); flat parameters only.
        momentum: mu in [0, 1): b <- mu b + (1 - mu) g.
        nesterov: orthogonalise (1 - mu) g + mu b instead of b.
        ns_coefficients: ``"quintic"`` (torch's (3.4445, -4.7750, 2.0315)), ``"cubic"``,
            or a tuple (a, b, c).
        eps: floor of the Frobenius norm in msign's pre-normalisation.
        ns_steps: polynomial steps of msign.
        adjust_lr_fn: None / ``"original"`` (lr sqrt(max(1, n/p))) or
            ``"match_rms_adamw"`` (0.2 lr sqrt(max(n, p))), as in torch.
        manifold: the manifold of groups that do not name one.
        msign_dtype: msign's working dtype (bfloat16 as in torch; None: the parameter's).
        nonfinite: "raise" or "skip" on a non-finite gradient.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: str | tuple[float, float, float] = "quintic",
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        manifold: Any = None,
        *,
        msign_dtype: torch.dtype | None = torch.bfloat16,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            manifold=manifold,
        )
        super().__init__(params, defaults, msign_dtype=msign_dtype, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check_spectral(group)
        check_nonnegative(group, "weight_decay")
        _check_matrices(group, type(self).__name__)
        if group["adjust_lr_fn"] not in (None, "original", "match_rms_adamw"):
            raise ValueError(
                "adjust_lr_fn must be None, 'original' or 'match_rms_adamw', "
                f"got {group['adjust_lr_fn']!r}"
            )
        if group["weight_decay"] and any(
            declared_manifold(p, group) is not None for p in group["params"]
        ):
            raise ValueError(
                "weight_decay shrinks x off its manifold (a constrained weight's scale is "
                "fixed by the constraint): use weight_decay=0 for parameters with a manifold"
            )

    def _step(
        self, stack: Stack, x: Tensor, g: Tensor, buf: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        group = stack.group
        declared = declared_manifold(stack.params[0], group)
        return muon_step(
            None if declared is None else stack.manifold,
            x,
            g,
            buf,
            weight_decay=group["weight_decay"],
            adjust_lr_fn=group["adjust_lr_fn"],
            **self._msign_options(group),
        )


_MUON_DEFAULTS = {name: p.default for name, p in inspect.signature(Muon).parameters.items()
                  if p.default is not inspect.Parameter.empty}
"""Muon's keyword defaults, read from its signature: the one place that holds them."""
_MSIGN_GROUP = ("momentum", "nesterov", "ns_coefficients", "eps", "ns_steps")
"""The :class:`MsignOptions` stored in a param group (the others are the optimizer's)."""


class Spel(Muon):
    r"""Spectral steepest descent on Stiefel: x' = polar(x - lr r msign(grad_M f)).

    :class:`Muon` on ``Stiefel(retraction)`` with no weight decay: the momentum of
    Riemannian gradients is orthogonalised by msign (approximate), and the point is
    put back on the manifold by an exact polar factor (Newton-Schulz to a tolerance by
    default, or ``"polar"``), so the weights stay orthonormal to rounding.

    Args:
        params: Stiefel frames (..., n, p), or param groups.
        lr: learning rate eta.
        retraction: ``"newton-schulz"`` or ``"polar"``.
        options: :class:`MsignOptions` and ``adjust_lr_fn``, as in :class:`Muon`.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        retraction: str = "newton-schulz",
        **options: Unpack[_SpelOptions],
    ) -> None:
        if retraction not in ("newton-schulz", "polar"):
            raise ValueError(f"retraction must be 'newton-schulz' or 'polar', got {retraction!r}")
        super().__init__(params, lr=lr, weight_decay=0.0, manifold=Stiefel(retraction), **options)


class ManifoldMuon(_Spectral):
    r"""Manifold Muon: the exact spectral-norm steepest-descent step in T_x Stiefel.

    x' = R_x(lr A) with A = argmin <u, A> over tangent A with |A|_2 <= 1 (dual descent
    on the symmetric multiplier to ``tol``; see
    :func:`geodyn.functional.stiefel_spectral_direction`), u the (Nesterov) momentum of
    Riemannian gradients. Each step runs SVDs until the direction is tangent to
    ``tol``: exact, and far costlier than :class:`Spel`.

    Args:
        params: Stiefel frames (..., n, p), or param groups.
        lr: step length in the spectral norm.
        momentum, nesterov: as in :class:`Muon`.
        tol: max |sym(X^T A)| of the returned direction (default: 64 eps sqrt(p)).
        maxiter: dual iterations before :class:`~geodyn.ConvergenceError`.
        manifold: a :class:`~geodyn.manifolds.Stiefel` (default ``Stiefel("newton-schulz")``).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        nesterov: bool = True,
        tol: float | None = None,
        maxiter: int = 1000,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            tol=tol,
            maxiter=maxiter,
            manifold=Stiefel("newton-schulz") if manifold is None else manifold,
        )
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "momentum")
        _check_matrices(group, "ManifoldMuon")
        for p in group["params"]:
            if not isinstance(manifold_of(p, group), Stiefel):
                raise ValueError(
                    "ManifoldMuon steps orthonormal frames: give it manifold=Stiefel(...) "
                    f"(a parameter of shape {tuple(p.shape)} is on {manifold_of(p, group)!r})"
                )

    def _step(
        self, stack: Stack, x: Tensor, g: Tensor, buf: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        group = stack.group
        return manifold_muon_step(
            stack.manifold,
            x,
            g,
            buf,
            lr=group["lr"],
            momentum=group["momentum"],
            nesterov=group["nesterov"],
            tol=group["tol"],
            maxiter=group["maxiter"],
        )


class MuonHyperball(_Spectral):
    r"""Muon on the fixed-norm sphere: x' = R normalize(x - lr R normalize(msign(u))).

    Every weight keeps its Frobenius norm R: ``radius``, or its norm when the optimizer
    is built (stored as ``state[param]["radius"]``). With ``radius`` given, the weights
    are rescaled to it at construction.

    Args:
        params: (n, p) matrices of nonzero norm, or param groups.
        lr: step length relative to R.
        radius: the common norm R, or None for each weight's own initial norm.
        options: :class:`MsignOptions`, as in :class:`Muon` (its defaults).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        radius: float | None = None,
        **options: Unpack[MsignOptions],
    ) -> None:
        if radius is not None and not (math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a positive finite number or None, got {radius}")
        given: dict[str, Any] = dict(options)
        defaults = {key: given.pop(key, _MUON_DEFAULTS[key]) for key in _MSIGN_GROUP}
        super().__init__(
            params,
            {"lr": lr, **defaults},
            msign_dtype=given.pop("msign_dtype", _MUON_DEFAULTS["msign_dtype"]),
            nonfinite=given.pop("nonfinite", _MUON_DEFAULTS["nonfinite"]),
        )
        if given:
            raise TypeError(f"MuonHyperball got unexpected keyword arguments {sorted(given)}")
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    norm = float(p.norm())
                    if not (norm > 0 and math.isfinite(norm)):
                        raise ValueError(
                            f"MuonHyperball needs weights of finite nonzero norm; a parameter "
                            f"of shape {tuple(p.shape)} has norm {norm}"
                        )
                    if radius is not None:
                        p.mul_(radius / norm)
                    self.state[p]["radius"] = norm if radius is None else float(radius)

    def _check_group(self, group: dict[str, Any]) -> None:
        _check_spectral(group)
        for p in group["params"]:
            if p.dim() != 2:
                raise ValueError(
                    f"MuonHyperball steps (n, p) matrices, each on its own sphere; a parameter "
                    f"has shape {tuple(p.shape)}: reshape it or use another optimizer"
                )

    def _step(
        self, stack: Stack, x: Tensor, g: Tensor, buf: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        group = stack.group
        radii = torch.tensor([self.state[p]["radius"] for p in stack.params], dtype=x.dtype)
        return hyperball_step(
            x,
            g,
            buf,
            radius=radii.to(x.device),
            **self._msign_options(group),
        )
