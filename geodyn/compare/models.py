"""The models: logistic regression, a ReLU MLP and a small CNN (1-D for signals, 2-D for
images). Each is a plain ``nn.Sequential`` chain, so chain-only methods (Path-SGD) take it.

The MNIST-1D paper's models (Greydanus 2020, its public training code): logistic regression
``Linear(40, 10)``; the MLP ``40 -> 256 -> 256 -> 10`` with ReLU (the code's hidden size 256;
a plain chain here, without the code's skip connection around the second layer); the CNN
three ``Conv1d``
layers of 25 channels (kernel 5 then 3, 3, stride 2, padding 1, ReLU; 40 -> 19 -> 10 -> 5
positions) and a linear classifier on the 125 features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .data import Dataset


class MLP(nn.Sequential):
    """``n_in -> hidden -> ... -> n_out`` with ReLU between the linear layers."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int) -> None:
        widths = (n_in, *hidden, n_out)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class _Shaped(nn.Sequential):
    """A chain whose ``forward`` first reshapes flat input rows to ``(1, *image_shape)``."""

    image_shape: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.reshape(x.shape[0], 1, *self.image_shape))


class SignalCNN(_Shaped):
    """MNIST-1D's CNN: three 25-channel ``Conv1d`` (kernels 5, 3, 3; stride 2; padding 1)
    with ReLU, then a linear classifier."""

    def __init__(self, length: int, n_out: int, channels: int = 25) -> None:
        n = length
        for kernel in (5, 3, 3):
            n = (n + 2 - kernel) // 2 + 1
        super().__init__(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(channels * n, n_out),
        )
        self.image_shape = (length,)


class SmallCNN(_Shaped):
    """Two 3x3 convolutions (16, 32 channels), a 2x2 max-pool and a linear classifier."""

    def __init__(self, image_shape: tuple[int, int], n_out: int) -> None:
        h, w = image_shape
        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * (h // 2) * (w // 2), n_out),
        )
        self.image_shape = image_shape


@torch.no_grad()
def unbalance(model: nn.Module, seed: int, low: float = 0.1, high: float = 10.0) -> nn.Module:
    r"""Rescale every hidden unit of an MLP chain, in place, without changing its function.

    Unit $i$ of a hidden ``Linear`` layer gets a factor $c_i$ drawn log-uniformly in
    [``low``, ``high``] (from ``seed``): its incoming weights and bias are multiplied by $c_i$
    and its outgoing weights divided by it. ReLU is positively homogeneous, so the network
    computes the same function; only the parameterisation is unbalanced (Path-SGD's test).
    """
    layers = list(model.children()) if isinstance(model, nn.Sequential) else []
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    allowed = all(isinstance(m, (nn.Linear, nn.ReLU)) for m in layers)
    if not allowed or len(linears) < 2:
        raise ValueError("unbalance needs an MLP chain (Linear and ReLU layers, >= 1 hidden)")
    generator = torch.Generator().manual_seed(10_000 + seed)
    for inner, outer in zip(linears[:-1], linears[1:], strict=True):
        u = torch.rand(inner.out_features, generator=generator, dtype=torch.float64)
        c = torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(inner.weight)
        inner.weight.mul_(c[:, None])
        if inner.bias is not None:
            inner.bias.mul_(c)
        outer.weight.div_(c[None, :])
    return model


def linear(data: Dataset) -> nn.Module:
    """Logistic (softmax) regression."""
    return nn.Sequential(nn.Linear(data.n_features, data.n_classes))


def mlp(data: Dataset, hidden: tuple[int, ...] = (256, 256)) -> nn.Module:
    return MLP(data.n_features, hidden, data.n_classes)


def cnn(data: Dataset) -> nn.Module:
    shape = data.image_shape
    if shape is None:
        raise ValueError(
            f"model 'cnn' needs signal or image data but dataset {data.name!r} has none; "
            "use --model mlp or --dataset mnist1d"
        )
    if len(shape) == 1:
        return SignalCNN(shape[0], data.n_classes)
    return SmallCNN((shape[0], shape[1]), data.n_classes)


MODELS: dict[str, Callable[[Dataset], nn.Module]] = {"linear": linear, "mlp": mlp, "cnn": cnn}


def build_model(
    name: str, data: Dataset, seed: int, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The model ``name`` for ``data``, initialised from ``seed``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    torch.manual_seed(seed)
    return MODELS[name](data).to(dtype)
