"""Workloads: an MLP and a small CNN whose hidden weights are stored as matrices.

Every constrained weight is a matrix W of shape (out, fan_in) (a convolution kernel
is flattened to (out, in * k * k)), so matrix manifolds (Oblique rows, Stiefel)
apply to it directly. With ``lift=True`` the weight gets a trailing axis of size 2,
W[..., 0] = q and W[..., 1] = xi, for the circle lift q^2 + xi^2 = r^2, stored planar
as ``CircleLift.lift`` makes it; the layer uses q only, through ``CircleLift.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from geodyn.manifolds import CircleLift

__all__ = ["MatrixConv", "MatrixLinear", "Workload", "cnn", "mlp"]


_READ = CircleLift(1.0)


class _MatrixLayer(nn.Module):
    def __init__(self, out_features: int, fan_in: int, lift: bool) -> None:
        super().__init__()
        self.lift = lift
        bound = fan_in**-0.5
        w = torch.empty(out_features, fan_in).uniform_(-bound, bound)
        # any radius above the bound reads and lifts the same q
        self.weight = nn.Parameter(_READ.lift(w) if lift else w)
        self.bias = nn.Parameter(torch.zeros(out_features))

    def matrix(self) -> Tensor:
        """The (out, fan_in) weight matrix the layer applies (lifted: q, as
        ``CircleLift.weight`` reads it)."""
        return _READ.weight(self.weight) if self.lift else self.weight


class MatrixLinear(_MatrixLayer):
    """y = W x + b with W stored as (out, in) (or (out, in, 2) when lifted)."""

    def __init__(self, in_features: int, out_features: int, lift: bool = False) -> None:
        super().__init__(out_features, in_features, lift)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.matrix(), self.bias)


class MatrixConv(_MatrixLayer):
    """A 'same' k x k convolution whose kernel is stored flattened as (out, in * k * k)."""

    def __init__(self, in_channels: int, out_channels: int, k: int = 3, lift: bool = False):
        super().__init__(out_channels, in_channels * k * k, lift)
        self.kernel = (out_channels, in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        w = self.matrix().reshape(self.kernel)
        return F.conv2d(x, w, self.bias, padding=self.kernel[-1] // 2)


@dataclass
class Workload:
    """A model, its hidden (constrained) layers and one fixed random batch."""

    name: str
    model: nn.Module
    hidden: list[_MatrixLayer]
    inputs: Tensor
    targets: Tensor

    def loss(self) -> Tensor:
        return F.cross_entropy(self.model(self.inputs), self.targets)


def mlp(
    sizes: tuple[int, ...] = (784, 1024, 1024, 10),
    batch: int = 128,
    lift: bool = False,
    seed: int = 0,
) -> Workload:
    """MLP with ReLU; every weight but the output layer's is hidden (constrained)."""
    if len(sizes) < 3:
        raise ValueError(f"sizes needs input, at least one hidden and output size, got {sizes}")
    gen = torch.manual_seed(seed)
    layers = [
        MatrixLinear(a, b, lift=lift and i < len(sizes) - 2)
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False))
    ]
    body: list[nn.Module] = []
    for layer in layers[:-1]:
        body += [layer, nn.ReLU()]
    model = nn.Sequential(*body, layers[-1])
    inputs = torch.randn(batch, sizes[0], generator=gen)
    targets = torch.randint(0, sizes[-1], (batch,), generator=gen)
    name = "MLP " + "-".join(map(str, sizes))
    return Workload(name, model, layers[:-1], inputs, targets)


def cnn(
    channels: tuple[int, ...] = (3, 32, 64),
    image: int = 32,
    classes: int = 10,
    batch: int = 128,
    lift: bool = False,
    seed: int = 0,
) -> Workload:
    """conv3x3-ReLU-maxpool blocks, then a linear classifier; the convolutions are hidden."""
    if len(channels) < 2 or image % 2 ** (len(channels) - 1):
        raise ValueError(
            f"channels needs >= 2 entries and image ({image}) must be divisible by "
            f"2 ** (len(channels) - 1); got channels={channels}"
        )
    gen = torch.manual_seed(seed)
    pairs = zip(channels[:-1], channels[1:], strict=False)
    convs = [MatrixConv(a, b, lift=lift) for a, b in pairs]
    body: list[nn.Module] = []
    for conv in convs:
        body += [conv, nn.ReLU(), nn.MaxPool2d(2)]
    side = image // 2 ** len(convs)
    head = MatrixLinear(channels[-1] * side * side, classes)
    model = nn.Sequential(*body, nn.Flatten(), head)
    inputs = torch.randn(batch, channels[0], image, image, generator=gen)
    targets = torch.randint(0, classes, (batch,), generator=gen)
    name = "CNN " + "-".join(map(str, channels)) + f" @{image}px"
    return Workload(name, model, list(convs), inputs, targets)
