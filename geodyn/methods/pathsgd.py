r"""Path-SGD: steepest descent in the rescaling-invariant geometry of ReLU networks.

Neyshabur, Salakhutdinov, Srebro, *Path-SGD: Path-Normalized Optimization in Deep
Neural Networks*, NIPS 2015 (arXiv 1506.02617).

A feed-forward ReLU network is a graph whose edges carry the weights; a bias
b_v is an edge into v from a constant-1 node. The path norm sums over every
path from an input or constant node to an output:

$$\phi_p(w) = \Big(\sum_{\text{paths } P} \prod_{e \in P} |w_e|^p\Big)^{1/p}.$$

Path-SGD (p = 2) scales each coordinate of the gradient by the path mass
through its edge, with every other edge squared:

$$w_e \leftarrow w_e - \frac{\eta}{\gamma_e(w)} \frac{\partial L}{\partial w_e}, \qquad
\gamma_{u \to v} = \gamma_{in}(u)\,\gamma_{out}(v),$$

$$\gamma_{in}(v) = \sum_u \gamma_{in}(u)\, w_{uv}^2 + b_v^2, \qquad
\gamma_{out}(u) = \sum_v w_{uv}^2\, \gamma_{out}(v),$$

with gamma_in = 1 at the inputs and gamma_out = 1 at the outputs.

gamma_in is the forward pass of the network with squared weights, identity
activations and an all-ones input; since phi_2^2 = sum of that pass's outputs
is linear in each w_e^2, gamma_e = d phi_2^2 / d(w_e^2), one backward pass. A
convolution weight is shared by many edges; its gamma is the same derivative,
the sum of gamma over the edges that share it.

Multiplying the incoming weights and bias of a hidden unit by c > 0 and its
outgoing weights by 1/c leaves the network function and phi_p unchanged;
gamma of an incoming edge scales by 1/c^2 and its gradient by 1/c, so the
step scales by c like the weight itself: Path-SGD commutes with the rescaling.

Supported layers, in an ``nn.Sequential`` (nested ones are flattened):
``Linear``, ``Conv2d`` (any padding mode: padding copies entries, weight 1),
``ReLU``, ``Flatten``, ``Identity``, ``MaxPool2d`` (a max is a gate choosing
one of its unit-weight input edges, as a ReLU gates a unit; the path norm
counts every gated path, so the squared pass sums the window) and
``AvgPool2d`` with a constant divisor (fixed edges of weight 1/divisor).
Anything else (other activations, normalisation, dropout) is refused: the
rescaling symmetry that defines the geometry does not hold there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PathSGD", "path_gamma", "path_norm"]

_WEIGHTED = (nn.Linear, nn.Conv2d)
_PASS_THROUGH = (nn.ReLU, nn.Identity)


def _flatten(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [layer for child in model for layer in _flatten(child)]
    return [model]


def _check_layer(layer: nn.Module) -> None:
    name = type(layer).__name__
    if isinstance(layer, (*_WEIGHTED, *_PASS_THROUGH, nn.Flatten)):
        return
    if isinstance(layer, nn.MaxPool2d):
        if layer.return_indices or layer.dilation not in (1, (1, 1)):
            raise ValueError(
                "Path-SGD supports MaxPool2d only with dilation=1 and return_indices=False"
            )
        return
    if isinstance(layer, nn.AvgPool2d):
        constant = layer.divisor_override is not None or (
            not layer.ceil_mode and (layer.count_include_pad or layer.padding in (0, (0, 0)))
        )
        if not constant:
            raise ValueError(
                "Path-SGD needs AvgPool2d with one divisor for every window: use "
                "count_include_pad=True (or padding=0) and ceil_mode=False, or divisor_override"
            )
        return
    raise ValueError(
        f"Path-SGD is defined for feed-forward ReLU networks (nn.Sequential of Linear, Conv2d, "
        f"ReLU, Flatten, Identity, MaxPool2d, AvgPool2d); {name} breaks the node-rescaling "
        "symmetry that defines the path geometry. Remove it or train with another optimizer"
    )


def _path_layers(model: nn.Module) -> list[nn.Module]:
    """The model's layers in order, validated; raises ``ValueError`` for anything unsupported."""
    if not isinstance(model, (nn.Sequential, *_WEIGHTED)):
        raise ValueError(
            f"model must be an nn.Sequential (or a single Linear/Conv2d), got "
            f"{type(model).__name__}; Path-SGD needs the network's graph to be a plain chain"
        )
    layers = _flatten(model)
    for layer in layers:
        _check_layer(layer)
    if not any(isinstance(layer, _WEIGHTED) for layer in layers):
        raise ValueError("model has no Linear or Conv2d layer: no path has a weight")
    return layers


def _input_shape(layers: list[nn.Module], input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(n) for n in input_shape)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            return (layer.in_features,)
        if not isinstance(layer, (*_PASS_THROUGH, nn.Flatten)):
            break
    raise ValueError(
        "input_shape is needed when the network does not start with Linear: the path "
        "sums of a convolution depend on the image size; pass one sample's shape, e.g. (3, 32, 32)"
    )


def _path_pass(
    layers: list[nn.Module], input_shape: tuple[int, ...], p: float, track: bool
) -> tuple[Tensor, dict[Tensor, Tensor]]:
    r"""sum over paths of prod |w_e|^p, and the leaves |w|^p (with grad if ``track``)."""
    params = [q for layer in layers if isinstance(layer, _WEIGHTED) for q in layer.parameters()]
    powered: dict[Tensor, Tensor] = {
        q: q.detach().abs().pow(p).requires_grad_(track) for q in params
    }
    ref = params[0]
    h = torch.ones((1, *input_shape), dtype=ref.dtype, device=ref.device)
    for layer in layers:
        if isinstance(layer, _WEIGHTED):
            w = powered[layer.weight]
            b = powered[layer.bias] if layer.bias is not None else None
            if isinstance(layer, nn.Linear):
                h = F.linear(h, w, b)
            else:
                h = layer._conv_forward(h, w, b)
        elif isinstance(layer, nn.Flatten):
            h = layer(h)
        elif isinstance(layer, nn.MaxPool2d):
            h = F.avg_pool2d(
                h, layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                count_include_pad=True, divisor_override=1,
            )
        elif isinstance(layer, nn.AvgPool2d):
            kernel = layer.kernel_size
            area = kernel * kernel if isinstance(kernel, int) else kernel[0] * kernel[1]
            divisor = layer.divisor_override or area
            h = layer(h) / divisor**(p - 1)
    return h.sum(), powered


def path_norm(
    model: nn.Module, p: float = 2.0, *, input_shape: Sequence[int] | None = None
) -> Tensor:
    r"""The path norm phi_p(w) = (sum over input-output paths of prod_e |w_e|^p)^(1/p).

    Biases are edges from a constant-1 node, so paths start at an input or at a bias.

    Args:
        model: an ``nn.Sequential`` feed-forward ReLU network (see the module docs).
        p: the exponent, ``p >= 1``.
        input_shape: one sample's shape; needed when the network starts with a convolution.

    Returns:
        A 0-d tensor (no gradient).
    """
    p = float(p)
    if not p >= 1 or p == float("inf"):
        raise ValueError(f"p must be a finite number >= 1, got {p}")
    layers = _path_layers(model)
    with torch.no_grad():
        total, _ = _path_pass(layers, _input_shape(layers, input_shape), p, track=False)
    return total.pow(1.0 / p)


def _gammas(layers: list[nn.Module], input_shape: tuple[int, ...]) -> dict[Tensor, Tensor]:
    with torch.enable_grad():
        total, squared = _path_pass(layers, input_shape, 2.0, track=True)
        leaves = list(squared.values())
        grads = torch.autograd.grad(total, leaves)
    return dict(zip(squared.keys(), grads, strict=True))


def path_gamma(
    model: nn.Module, *, input_shape: Sequence[int] | None = None
) -> dict[str, Tensor]:
    r"""gamma_e = d phi_2^2 / d(w_e^2) for every parameter: the Path-SGD preconditioner.

    For an edge u -> v, gamma = gamma_in(u) gamma_out(v); for a bias, gamma_out(v).

    Returns:
        A dict from parameter name (as in ``model.named_parameters()``) to gamma, same shape.
    """
    layers = _path_layers(model)
    gammas = _gammas(layers, _input_shape(layers, input_shape))
    return {name: gammas[q] for name, q in model.named_parameters()}


class PathSGD(torch.optim.Optimizer):
    r"""Path-SGD with optional momentum: w <- w - lr * m, m <- mu m + (1 - dampening) g / gamma.

    gamma is recomputed at every step from the current weights (one forward and one
    backward pass of a batch of one through the squared network). Where gamma = 0 (a
    unit with no path to the output) the gradient is zero too and the step is zero.

    Args:
        model: an ``nn.Sequential`` feed-forward ReLU network (see the module docs);
            all of its parameters are optimised.
        lr: step size eta.
        momentum: heavy-ball coefficient mu in [0, 1).
        dampening: dampening of the momentum in [0, 1).
        input_shape: one sample's shape; needed when the network starts with a convolution.
        first_step_ratio: multiply every step by the constant
            rho = (sum_l |g_l| / sum_l |g_l / gamma_l|^2)^(1/2), computed at the first step
            (l runs over parameter tensors), as the authors' public code does. Off by
            default: it is a global step-size rescaling that is not rescaling-invariant.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        *,
        input_shape: Sequence[int] | None = None,
        first_step_ratio: bool = False,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if not 0 <= dampening < 1:
            raise ValueError(f"dampening must lie in [0, 1), got {dampening}")
        self._layers = _path_layers(model)
        self._input_shape = _input_shape(self._layers, input_shape)
        self.first_step_ratio = first_step_ratio
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening}
        super().__init__(list(model.parameters()), defaults)

    def _directions(self) -> dict[Tensor, Tensor]:
        """g / gamma for every parameter with a gradient; raises before anything is changed."""
        gammas = _gammas(self._layers, self._input_shape)
        directions = {}
        for group in self.param_groups:
            for q in group["params"]:
                if q.grad is None:
                    continue
                g, gamma = q.grad, gammas[q]
                if not bool(torch.isfinite(g).all()):
                    raise ValueError(
                        "a gradient has NaN or Inf entries; Path-SGD left the weights unchanged "
                        "(check the learning rate and the data)"
                    )
                dead = gamma == 0
                if bool((dead & (g != 0)).any()):
                    raise ValueError(
                        "a weight with no path to the output (gamma = 0) has a nonzero gradient: "
                        "the loss depends on more than the network output (e.g. a penalty); "
                        "Path-SGD's geometry does not cover that term"
                    )
                directions[q] = torch.where(dead, 0.0, g / torch.where(dead, 1.0, gamma))
        return directions

    def _ratio(self, directions: dict[Tensor, Tensor]) -> float:
        # a str key: torch's stub types the state as keyed by tensors only; state_dict()
        # keeps non-tensor keys as they are
        state: dict[Any, Any] = self.state
        if "path_ratio" not in state:
            sgd = sum(float(q.grad.norm()) for q in directions if q.grad is not None)
            path = sum(float(d.norm()) ** 2 for d in directions.values())
            state["path_ratio"] = (sgd / path) ** 0.5 if path > 0 else 1.0
        return state["path_ratio"]

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """One Path-SGD step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        directions = self._directions()
        scale = self._ratio(directions) if self.first_step_ratio else 1.0
        for group in self.param_groups:
            lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
            for q in group["params"]:
                if q not in directions:
                    continue
                d = directions[q]
                if mu != 0:
                    state = self.state[q]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(mu).add_(d, alpha=1 - damp)
                    d = state["momentum_buffer"]
                q.add_(d, alpha=-lr * scale)
        return loss
