r"""Weight-constrained Langevin training (Leimkuhler, Vlaar, Pouchon, Storkey, ICML 2021,
arXiv 2106.10704): recipes that build a constrained model and its integrator.

Underdamped (constrained BAOAB, :class:`~geodyn.integrators.Splitting`): with
$c = e^{-\gamma h}$,

* B: $p \leftarrow P_q\big(p - h\,\nabla L(q)\big)$
* A: $q \leftarrow \mathrm{shake}(q, q + \tfrac h2 p)$, $p$ by RATTLE (or the exact rotation
  of the circle lift)
* O: $p \leftarrow c\,p + \sqrt{(1 - c^2)\,\tau}\,P_q R$

With $\tau = 0$ this is heavy-ball momentum on the constraint set with momentum $c$.
Overdamped (:class:`~geodyn.integrators.Overdamped`):
$q_{n+1} = \mathrm{shake}\big(q_n, q_n + P_{q_n}(-h\,\nabla L(q_n) + \sqrt{2h\tau}\,R_n)\big)$.

Two constraints of the paper:

* **circle**: every weight $|q| \le r$ through $(q, \xi)$ with $q^2 + \xi^2 = r^2$; the A
  step is the exact rotation of $(q, \xi)$ by the angle $\omega h$,
  $\omega = (\xi p_q - q p_\xi)/r^2$. Biases are free.
* **orthogonal**: $W^\top W = I$ (tall) or $W W^\top = I$ (wide), conv kernels as
  (out, in·kh·kw); the first layer is left free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.optim import Optimizer

from ..constraints import circle as circle_preset
from ..constraints import constrain_model
from ..constraints.layers import select_layers
from ..integrators import Overdamped, Splitting

__all__ = ["circle_model", "gamma_from_momentum", "orthogonal_model"]

Form = Literal["underdamped", "overdamped"]


def gamma_from_momentum(momentum: float, lr: float) -> float:
    r"""The friction whose O step damps like heavy-ball ``momentum``: $\gamma = -\ln(c)/h$."""
    if not 0.0 < float(momentum) < 1.0:
        raise ValueError(f"momentum must be in (0, 1), got {momentum}")
    if not float(lr) > 0.0:
        raise ValueError(f"lr must be positive, got {lr}")
    return -math.log(float(momentum)) / float(lr)


def _check_form(form: str) -> None:
    if form not in ("underdamped", "overdamped"):
        raise ValueError(f"form must be 'underdamped' or 'overdamped', got {form!r}")


def _integrator(
    model: nn.Module,
    form: Form,
    lr: float,
    gamma: float,
    tau: float,
    seed: int | None,
    generator: torch.Generator | None,
) -> Optimizer:
    _check_form(form)
    if form == "underdamped":
        return Splitting(
            model.parameters(), lr=lr, gamma=gamma, tau=tau, scheme="BAOAB",
            seed=seed, generator=generator,
        )
    return Overdamped(model.parameters(), lr=lr, tau=tau, seed=seed, generator=generator)


def circle_model(
    model: nn.Module,
    radii: float | Sequence[float] = (0.05, 0.1),
    lr: float = 0.3,
    gamma: float = 1.0,
    tau: float = 0.0,
    form: Form = "underdamped",
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, Optimizer]:
    """Circle-constrain every Linear/Conv weight of ``model`` and build its integrator.

    Defaults are the paper's MLP setting (784-1000-10): h = 0.3, gamma = 1, tau = 0,
    r = 0.05 for the first layer and 0.1 for the second; biases free.

    Args:
        model: the network (changed in place and returned).
        radii: one radius for all layers, or one per Linear/Conv layer in module order.
        lr: step size h.
        gamma: friction (underdamped form).
        tau: temperature.
        form: ``"underdamped"`` (BAOAB) or ``"overdamped"`` (SHAKE-projected SGLD).
        seed: noise seed; or pass ``generator``.
        generator: noise generator.

    Returns:
        ``(model, optimizer)``.
    """
    layers = select_layers(model)
    per_layer = [float(radii)] * len(layers) if isinstance(radii, int | float) else list(radii)
    if len(per_layer) != len(layers):
        raise ValueError(
            f"radii has {len(per_layer)} entries but the model has {len(layers)} Linear/Conv "
            f"layers ({[n for n, _ in layers]}); give one radius per layer or a single float"
        )
    _check_form(form)
    for (_, layer), radius in zip(layers, per_layer, strict=True):
        circle_preset(layer, radius)
    return model, _integrator(model, form, lr, gamma, tau, seed, generator)


def orthogonal_model(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    tau: float = 0.0,
    form: Form = "underdamped",
    *,
    exclude_first: bool = True,
    exclude: Iterable[str | nn.Module] = (),
    retraction: str = "qr",
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[nn.Module, Optimizer]:
    """Make every Linear/Conv weight orthogonal (W^T W = I or W W^T = I) and build the integrator.

    Defaults are the paper's ResNet/CIFAR-10 setting: h = 0.1, momentum-equivalent 0.9
    (gamma = -ln(0.9)/h), tau = 0, conv kernels reshaped to (out, in*kh*kw), the first
    layer left free. Initial weights are projected onto the Stiefel manifold (polar factor;
    wide layers by transposition, so they start orthonormal).

    Args:
        model: the network (changed in place and returned).
        lr: step size h.
        momentum: heavy-ball-equivalent damping c = exp(-gamma h) per step (underdamped).
        tau: temperature.
        form: ``"underdamped"`` (BAOAB) or ``"overdamped"`` (SHAKE-projected SGLD).
        exclude_first: leave the first Linear/Conv layer unconstrained.
        exclude: further layers to leave free, by qualified name or module.
        retraction: the Stiefel retraction ("qr", "polar", "cayley", "exp").
        seed: noise seed; or pass ``generator``.
        generator: noise generator.

    Returns:
        ``(model, optimizer)``.
    """
    gamma = gamma_from_momentum(momentum, lr)
    _check_form(form)
    layers = select_layers(model)
    skip: list[str | nn.Module] = list(exclude)
    if exclude_first and layers:
        skip.append(layers[0][1])
    constrain_model(model, "orthogonal", exclude=skip, retraction=retraction)
    return model, _integrator(model, form, lr, gamma, tau, seed, generator)
