r"""Riemannian SGD with momentum, following torch.optim.SGD's conventions.

With $d_n = P_{x_n}(\nabla U(x_n) + w x_n)$ the Riemannian gradient,

$$b_{n} = \mu\, \mathcal{T}(b_{n-1}) + (1 - \delta)\, d_n \quad (b_1 = d_1), \qquad
u_n = d_n + \mu b_n \ \text{(Nesterov) or } b_n, \qquad x_{n+1} = R_{x_n}(-\eta\, u_n),$$

and the buffer moved to $T_{x_{n+1}}M$ with the manifold's ``retr_transp``. Where the
transport is the (linear) tangent projection (``manifold.linear_transport``) and the
momentum is not Nesterov's, the move is folded into the next step's projection,
$b_n = P_{x_n}(\mu b_{n-1} + (1 - \delta) g_n)$: the same iterates with one projection
per step instead of two. With every parameter Euclidean it follows
:class:`torch.optim.SGD`'s update and agrees with it to rounding (not bit for bit: the
operations are grouped differently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..functional.rsgd import rsgd_step
from ._base import GeometricOptimizer, Proposal, check_finite, check_nonnegative, check_step_size
from ._sharding import local
from ._stacks import Stack, manifold_of, stacks
from ._workspace import Workspace

__all__ = ["RiemannianSGD"]


class RiemannianSGD(GeometricOptimizer):
    """SGD with (Nesterov) momentum on M: Riemannian gradient, retraction, transported buffer.

    The momentum buffer ``state[param]["momentum_buffer"]`` is always tangent: it starts
    as the first Riemannian gradient (torch's first-step convention) and is moved to the
    new tangent space after every step, or, with linear transport and no Nesterov
    momentum, at the start of the next (then it is tangent at the point before the step).

    ``nonfinite``, ``seed`` and ``generator`` are those of
    :class:`~geodyn.integrators.GeometricOptimizer`.

    Args:
        params: parameters or param groups; a group may set ``lr``, ``momentum``,
            ``dampening``, ``nesterov``, ``weight_decay`` and ``manifold``.
        lr: learning rate eta.
        momentum: mu in [0, 1).
        dampening: delta, as in torch.optim.SGD.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
        weight_decay: w, adds w x to the gradient before projection.
        manifold: the manifold of groups that name none (by default each parameter's,
            :func:`~geodyn.integrators.manifold_of`).
        compiled: run the step as ``torch.compile``-d functions per stack instead
            of eagerly: the manifold's fast path (``fused_momentum_step``) where it
            declares an entrywise one (``fused_entrywise``) and it applies, the eager
            fast path where it declares one of matrix work (Stiefel), else
            :func:`geodyn.functional.rsgd_step`. The finiteness check and the commit
            stay eager, so a step is still all or nothing. The first steps compile
            (seconds per shape and dtype).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        manifold: Any = None,
        *,
        nonfinite: str = "raise",
        seed: int | None = None,
        generator: torch.Generator | None = None,
        compiled: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            manifold=manifold,
        )
        super().__init__(params, defaults, nonfinite=nonfinite, seed=seed, generator=generator)
        self.compiled = bool(compiled)
        self._step = torch.compile(rsgd_step) if compiled else rsgd_step
        # torch.compile imports dynamo (seconds): only for a compiled optimizer
        self._fused_kernels = (
            (torch.compile(_fused_checks), torch.compile(_fused_write)) if compiled else None
        )
        # per parameter (by id: the groups hold the parameters), the fast path's scratch
        self._work = Workspace()

    def _check_group(self, group: dict[str, Any]) -> None:
        check_step_size(group)
        check_nonnegative(group, "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")

    def _propose(self, closure: Callable[[], Any] | None) -> list[Proposal]:
        def select(p: Tensor, group: dict[str, Any]) -> Any:
            return None if p.grad is None else manifold_of(p, group)

        def has_buffer(p: Tensor) -> bool:
            return p in self.state and "momentum_buffer" in self.state[p]

        proposals = []
        for stack in stacks(self.param_groups, select, key=has_buffer):
            group, manifold = stack.group, stack.manifold
            mu = group["momentum"]
            x = stack.gather(stack.params)
            g = stack.gather([p.grad for p in stack.params])  # type: ignore[misc]
            old = None
            if mu and has_buffer(stack.params[0]):
                old = stack.gather([self.state[p]["momentum_buffer"] for p in stack.params])
            fused = self._fused(stack, x, g, old)
            if fused is not None:
                proposals.append(fused)
                continue
            check_finite(stack, g, "the gradient")
            x_new, buf = self._step(
                manifold,
                x,
                g,
                old,
                lr=group["lr"],
                momentum=mu,
                dampening=group["dampening"],
                nesterov=group["nesterov"],
                weight_decay=group["weight_decay"],
            )
            proposals.append(
                Proposal(stack, x_new, {} if buf is None else {"momentum_buffer": buf})
            )
        return proposals

    def _fused(self, stack: Stack, x: Tensor, g: Tensor, old: Tensor | None) -> Proposal | None:
        """The manifold's fast path (:meth:`~geodyn.manifolds.Manifold.fused_momentum_step`)
        where it applies: a step with no Nesterov momentum and no weight decay of one
        parameter the stack views in place. Its finiteness check is that of the few
        numbers the step computes anyway (row sums, Stiefel's diag(R): a NaN or Inf entry
        of x, the gradient or the buffer reaches them); where one is not finite the
        generic path runs, with its
        entrywise checks. Nothing is written until the commit, which writes the step
        into the parameter and its buffer.

        Compiled, an entrywise fast path (``manifold.fused_entrywise``) is one kernel of
        the row sums for the proposal and a second for the commit, which computes them
        again and writes in place (:func:`_fused_write`); another (Stiefel's matrix
        products and factorisations) runs eagerly.
        """
        group, manifold = stack.group, stack.manifold
        if group["nesterov"] or group["weight_decay"] or not stack.in_place:
            return None
        mu = group["momentum"]
        hyper = dict(lr=group["lr"], momentum=mu, dampening=group["dampening"])
        (param,) = stack.params
        if self._fused_kernels is not None and manifold.fused_entrywise:
            fused_checks, fused_write = self._fused_kernels
            checks = fused_checks(manifold, x, g, old, **hyper)
            fused = None
        else:
            scratch = self._work.scratch(id(param))
            fused = manifold.fused_momentum_step(x, g, old, **hyper, scratch=scratch)
            checks = None if fused is None else fused.checks
        if checks is None or not bool(torch.isfinite(checks).all()):
            return None

        def write() -> None:
            buf = None
            if mu:
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.empty_like(param)
                buf = local(state["momentum_buffer"]).view(x.shape)
            if fused is not None:
                fused.write(x, buf)
            elif not bool(fused_write(manifold, x, g, buf, old is not None, **hyper)):
                raise RuntimeError(
                    f"the compiled fast path of {manifold.name} found non-finite row sums "
                    "that its proposal found finite, and wrote nothing; run eagerly "
                    "(compiled=False)"
                )

        return Proposal(stack, None, write=write)


def _fused_checks(
    manifold: Any, x: Tensor, g: Tensor, old: Tensor | None, *, lr: float, momentum: float,
    dampening: float,
) -> Tensor | None:
    """The checks of the manifold's fast path, or None if it has none."""
    fused = manifold.fused_momentum_step(x, g, old, lr=lr, momentum=momentum,
                                         dampening=dampening)
    return None if fused is None else fused.checks


def _fused_write(
    manifold: Any, x: Tensor, g: Tensor, buf: Tensor | None, continued: bool, *, lr: float,
    momentum: float, dampening: float,
) -> Tensor:
    """The fast path's step written into ``x`` and the buffer ``buf`` (the old one read
    first where ``continued``, else none), computed again from its inputs so that one
    compiled kernel reads them once for the sums and once for the write, allocating
    nothing. The write is guarded by its own checks: where one is not finite, ``x`` and
    ``buf`` keep their values. Returns whether all were finite.
    """
    old = buf if continued else None
    fused = manifold.fused_momentum_step(x, g, old, lr=lr, momentum=momentum,
                                         dampening=dampening)
    ok = torch.isfinite(fused.checks).all()
    x_new, b = fused.write(None, None)
    if buf is not None:
        buf.copy_(torch.where(ok, b, buf))
    x.copy_(torch.where(ok, x_new, x))
    return ok
