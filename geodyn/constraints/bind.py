r"""Binding a manifold to a module's parameter.

``constrain(module, "weight", M)`` replaces the parameter by a
:class:`geoopt.ManifoldParameter` whose ``.manifold`` is a geodyn manifold, so
geoopt's optimizers and every geodyn integrator (through ``manifold_of``) keep it on M.

* Weights of more than two dimensions (conv kernels, shape (out, in, kh, kw)) are
  constrained as the matrix (out, in * kh * kw) of neuron rows, through
  :class:`~geodyn.manifolds.Reshaped`; a wide matrix is left to the manifold (Stiefel treats
  n < p by transposition, W W^T = I).
* A *lifted* manifold (one with ``lift(w) -> z`` and ``weight(z) -> w``, e.g. the circle
  lift with z = (q, xi), q^2 + xi^2 = r^2) stores z, of shape ``(*w.shape, 2)``, as the
  parameter and exposes w = weight(z) to the module through
  :mod:`torch.nn.utils.parametrize`. The loss depends on q alone, so dL/dxi = 0.

The binding lives in the parameter itself, so it survives ``state_dict`` /
``load_state_dict`` into a model constrained the same way, ``.to(device, dtype)`` and
``copy.deepcopy``.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import geoopt
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..manifolds import Manifold, Reshaped, as_geodyn

__all__ = ["constrain", "constrained_parameters", "is_lifted", "residuals"]

Init = Literal["project", "random", "keep"]


def is_lifted(manifold: Manifold) -> bool:
    """Whether ``manifold`` stores a lifted point z with the weight w = ``manifold.weight(z)``
    (its declared ``lifted``)."""
    return manifold.lifted


class _LiftedWeight(nn.Module):
    """The parametrization w = weight(z) of a lifted manifold (right inverse: lift)."""

    def __init__(self, manifold: Manifold) -> None:
        super().__init__()
        self.manifold = manifold

    def forward(self, z: Tensor) -> Tensor:
        return self.manifold.weight(z)

    def right_inverse(self, w: Tensor) -> Tensor:
        return self.manifold.lift(w)


def _geometry(manifold: Manifold, shape: tuple[int, ...]) -> Manifold:
    """The manifold acting on a stored tensor of ``shape``: kernels seen as (out, fan_in)."""
    if len(shape) > 2 and manifold.ndim > 0:
        return Reshaped(manifold, shape, (shape[0], math.prod(shape[1:])))
    return manifold


def _initial_point(
    manifold: Manifold,
    w: Tensor,
    init: str,
    where: str,
    generator: torch.Generator | None,
) -> Tensor:
    """The starting point on M for weight ``w`` (the lifted z for a lifted manifold)."""
    lifted = is_lifted(manifold)
    if init == "random":
        shape = (*w.shape, 2) if lifted else tuple(w.shape)
        return manifold.random_point(*shape, dtype=w.dtype, device=w.device, generator=generator)
    if lifted:
        bound = float(manifold.bound)
        if init == "project":
            w = w.clamp(-bound, bound)
        elif bool((w.abs() > bound).any()):
            raise ValueError(
                f"init='keep' but {where} has entries with |w| > bound {bound} "
                f"(max {float(w.abs().max()):.3e}); use init='project' to clip them"
            )
        return manifold.lift(w)
    if init == "project":
        return manifold.project(w)
    ok, reason = manifold.check_point(w)
    if not ok:
        raise ValueError(f"init='keep' but {where} is not on the manifold: {reason}; "
                         "use init='project' or init='random'")
    return w.clone()


def constrain(
    module: nn.Module,
    name: str,
    manifold: Manifold,
    init: Init = "project",
    *,
    generator: torch.Generator | None = None,
) -> geoopt.ManifoldParameter:
    """Put ``module``'s parameter ``name`` on ``manifold``.

    Args:
        module: the module owning the parameter (e.g. an ``nn.Linear``).
        name: the parameter's name in ``module`` (``"weight"``).
        manifold: a geodyn manifold (a geoopt one is converted by ``as_geodyn``).
        init: ``"project"`` moves the current value onto M (clipping for the circle lift),
            ``"random"`` draws ``random_point``, ``"keep"`` checks that it is already on M.
        generator: random source for ``init="random"``.

    Returns:
        The new :class:`geoopt.ManifoldParameter` (the lifted z for a lifted manifold).

    Raises:
        ValueError: unknown ``name`` or ``init``, a parameter already constrained, a shape
            the manifold cannot hold, or ``init="keep"`` with a point off M.
    """
    if init not in ("project", "random", "keep"):
        raise ValueError(f"init must be 'project', 'random' or 'keep', got {init!r}")
    where = f"{type(module).__name__}.{name}"
    if parametrize.is_parametrized(module, name):
        raise ValueError(f"{where} is already parametrized (constrained); constrain it once")
    param = module._parameters.get(name)
    if param is None:
        raise ValueError(
            f"{type(module).__name__} has no parameter {name!r}; "
            f"its parameters are {list(module._parameters)}"
        )
    if isinstance(param, geoopt.ManifoldParameter):
        raise ValueError(f"{where} is already on {param.manifold!r}; constrain it once")
    base = as_geodyn(manifold)
    lifted = is_lifted(base)
    geometry = base if lifted else _geometry(base, tuple(param.shape))
    reason = geometry.shape_error(
        (*param.shape, 2) if lifted else tuple(param.shape), where
    )
    if reason is not None:
        raise ValueError(reason)
    with torch.no_grad():
        point = _initial_point(geometry, param.detach(), init, where, generator)
    new = geoopt.ManifoldParameter(
        point.detach().clone(), manifold=geometry, requires_grad=param.requires_grad
    )
    if lifted:
        setattr(module, name, nn.Parameter(geometry.weight(point).detach().clone()))
        parametrize.register_parametrization(module, name, _LiftedWeight(geometry), unsafe=True)
        # register_parametrization made the ModuleDict; nn.Module's __getattr__ is untyped
        cast(nn.ModuleDict, module.parametrizations)[name].original = new
    else:
        setattr(module, name, new)
    return new


def constrained_parameters(model: nn.Module) -> dict[str, geoopt.ManifoldParameter]:
    """Every parameter of ``model`` bound to a geodyn manifold, by qualified name."""
    return {
        name: p
        for name, p in model.named_parameters()
        if isinstance(p, geoopt.ManifoldParameter) and isinstance(p.manifold, Manifold)
    }


def residuals(model: nn.Module) -> dict[str, float]:
    """max |c(x)| of every constrained parameter of ``model``, by qualified name."""
    with torch.no_grad():
        return {
            name: float(p.manifold.residual(p))
            for name, p in constrained_parameters(model).items()
        }
