r"""Orthogonal over-parameterized training (OPT): neurons W = R V with V fixed and R orthogonal.

Liu et al., *Orthogonal Over-Parameterized Training*, CVPR 2021 (arXiv 2004.04690).
A layer with n neurons of d = in * kh * kw inputs keeps a fixed random matrix
V in R^{d x n} (columns are neurons, entries N(0, 2/d)) and learns an
orthogonal R in O(d); its weight is W = R V. An orthogonal map keeps every
pairwise distance between the normalised neurons, so the hyperspherical energy

$$E_s(W) = \sum_{i \ne j} \|\hat w_i - \hat w_j\|^{-s} \quad (s > 0), \qquad
E_0(W) = \sum_{i \ne j} \log \|\hat w_i - \hat w_j\|^{-1}$$

stays at its value for the random initialisation throughout training.

In torch layout a neuron is a row of a ``Linear`` weight (out, in) and a slice
``weight[i]`` of a ``Conv2d`` weight (out, in, kh, kw); the torch weight is
``(R V)^T`` reshaped, with coordinates ordered as ``weight[i].flatten()``.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import geoopt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constraints.layers import LAYER_TYPES, select_layers
from ..manifolds import Stiefel
from ._orthogonal import cayley, gram_schmidt

__all__ = ["OPT", "apply_opt", "hyperspherical_energy", "new_episode"]

VARIANTS = ("cayley", "gram_schmidt", "stiefel")


def hyperspherical_energy(weight: Tensor, s: float = 1.0, *, neuron_dim: int = 0) -> Tensor:
    r"""Hyperspherical energy of the neurons of ``weight`` (a sum over ordered pairs i != j).

    $$E_s = \sum_{i \ne j} \|\hat w_i - \hat w_j\|^{-s} \ (s > 0), \qquad
    E_0 = \sum_{i \ne j} \log \frac{1}{\|\hat w_i - \hat w_j\|}, \qquad \hat w = w / \|w\|.$$

    Args:
        weight: a weight tensor; slices along ``neuron_dim`` are the neurons, each flattened.
            The default ``neuron_dim=0`` is torch's layout (rows of a ``Linear`` weight,
            output channels of a convolution); pass ``neuron_dim=-1`` for the paper's
            V in R^{d x n} whose columns are neurons.
        s: the power, ``s >= 0``.
        neuron_dim: the dimension that indexes neurons.

    Returns:
        A 0-d tensor; ``inf`` when two neurons point the same way.
    """
    s = float(s)
    if not s >= 0 or math.isinf(s):
        raise ValueError(f"s must be a finite number >= 0, got {s}")
    if weight.ndim < 2:
        raise ValueError(
            f"weight has shape {tuple(weight.shape)}; it needs a neuron dimension and at "
            "least one input dimension (a single neuron of shape (d,) is (1, d))"
        )
    w = weight.movedim(neuron_dim, 0).reshape(weight.shape[neuron_dim], -1)
    norms = w.norm(dim=1, keepdim=True)
    if bool((norms == 0).any()):
        raise ValueError("weight has a zero neuron; its direction w/|w| is undefined")
    unit = w / norms
    dist = torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist")
    off_diagonal = ~torch.eye(w.shape[0], dtype=torch.bool, device=w.device)
    pairs = dist[off_diagonal]
    if s == 0:
        return -torch.log(pairs).sum()
    return pairs.pow(-s).sum()


class OPT(nn.Module):
    r"""A ``Linear`` or ``Conv`` layer re-parameterised as W = R V (OPT).

    V (buffer ``neurons``, shape (d, n)) is fixed random N(0, 2/d); R is orthogonal, built
    from the parameter ``rotation`` according to ``variant``:

    * ``"cayley"``: ``rotation`` is a free matrix A, R = (I - S)^{-1}(I + S) with
      S = U - U^T, U = triu(A, 1).
    * ``"gram_schmidt"``: ``rotation`` is a free matrix, R = Gram-Schmidt of its rows.
    * ``"stiefel"``: ``rotation`` is R itself, a :class:`geoopt.ManifoldParameter` on
      :class:`geodyn.manifolds.Stiefel` (square, so O(d)); step it with a geodyn integrator
      (e.g. ``RiemannianSGD``) for orthogonality-preserving descent.

    Every variant starts at R = I, so the initial weight is V. The bias stays an ordinary
    parameter (``layer.bias``).

    Stochastic OPT (``stochastic=True``): R acts only on a random subset of ``subset_size``
    coordinates (default d // 4, at least 2), W = V with rows ``coords`` replaced by
    R V[coords]. :meth:`new_episode` commits R into V, resets R to I and draws new coordinates.

    Args:
        layer: an ``nn.Linear`` or ``nn.Conv1d/2d/3d``; its weight is replaced (discarded).
        variant: ``"cayley"``, ``"gram_schmidt"`` or ``"stiefel"``.
        stochastic: train a small rotation on a random coordinate subset per episode.
        subset_size: coordinates per episode (stochastic OPT only).
        generator: random source for V and for the coordinate subsets.
    """

    neurons: Tensor  # buffers, registered in __init__
    coords: Tensor

    def __init__(
        self,
        layer: nn.Module,
        variant: str = "cayley",
        *,
        stochastic: bool = False,
        subset_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(layer, LAYER_TYPES):
            raise ValueError(
                f"layer must be nn.Linear or nn.Conv1d/2d/3d, got {type(layer).__name__}"
            )
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        weight = layer.weight
        if isinstance(weight, nn.parameter.UninitializedParameter):
            raise ValueError("layer has an uninitialised (lazy) weight; run one forward first")
        n, d = weight.shape[0], weight[0].numel()
        if subset_size is not None and not stochastic:
            raise ValueError("subset_size is only used with stochastic=True")
        k = d
        if stochastic:
            k = max(2, d // 4) if subset_size is None else int(subset_size)
            if not 2 <= k <= d:
                raise ValueError(f"subset_size must lie in [2, d={d}], got {subset_size}")
        self.variant = variant
        self.stochastic = stochastic
        self.weight_shape = tuple(weight.shape)
        self.generator = generator
        dtype, device = weight.dtype, weight.device
        del layer.weight
        self.layer = layer
        gen_device = generator.device if generator is not None else "cpu"
        v = torch.randn(d, n, generator=generator, dtype=dtype, device=gen_device)
        self.register_buffer("neurons", (v * math.sqrt(2.0 / d)).to(device))
        self.register_buffer("coords", self._draw_coords(d, k).to(device))
        self.rotation = self._identity_parameter(k, dtype, device)

    # ------------------------------------------------------------------ construction
    def _draw_coords(self, d: int, k: int) -> Tensor:
        if k == d:
            return torch.arange(d)
        gen_device = self.generator.device if self.generator is not None else "cpu"
        return torch.randperm(d, generator=self.generator, device=gen_device)[:k].sort().values

    def _identity_parameter(self, k: int, dtype: torch.dtype, device: torch.device) -> nn.Parameter:
        if self.variant == "cayley":
            return nn.Parameter(torch.zeros(k, k, dtype=dtype, device=device))
        eye = torch.eye(k, dtype=dtype, device=device)
        if self.variant == "gram_schmidt":
            return nn.Parameter(eye)
        return geoopt.ManifoldParameter(eye, manifold=Stiefel())

    # ------------------------------------------------------------------ the map W = R V
    def rotation_matrix(self) -> Tensor:
        """The orthogonal matrix R (k x k; k = d unless stochastic)."""
        if self.variant == "cayley":
            return cayley(self.rotation)
        if self.variant == "gram_schmidt":
            return gram_schmidt(self.rotation)
        return self.rotation

    def _rotated(self) -> Tensor:
        """R V on the active coordinates, V elsewhere: shape (d, n)."""
        r = self.rotation_matrix()
        if not self.stochastic:
            return r @ self.neurons
        rows = r @ self.neurons[self.coords]
        return self.neurons.index_copy(0, self.coords, rows)

    @property
    def weight(self) -> Tensor:
        """The layer's weight (R V)^T in torch layout."""
        return self._rotated().mT.reshape(self.weight_shape)

    @property
    def bias(self) -> Tensor | None:
        """The layer's bias (an ordinary parameter), or ``None``."""
        return self.layer.bias

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, self.weight, self.layer.bias)
        return self.layer._conv_forward(x, self.weight, self.layer.bias)

    # ------------------------------------------------------------------ stochastic OPT
    @torch.no_grad()
    def new_episode(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Commit R into V (V[coords] <- R V[coords]), reset R to I, draw new coordinates.

        Args:
            optimizer: if given, its state for ``rotation`` (momentum of the finished
                rotation) is cleared, since it belongs to the old coordinates.
        """
        committed = self._rotated()
        self.neurons.copy_(committed)
        d, k = self.neurons.shape[0], self.rotation.shape[0]
        if self.stochastic:
            self.coords.copy_(self._draw_coords(d, k).to(self.coords.device))
        if self.variant == "cayley":
            self.rotation.zero_()
        else:
            self.rotation.copy_(torch.eye(k, dtype=self.rotation.dtype))
        if optimizer is not None:
            optimizer.state.pop(self.rotation, None)

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> dict[str, Tensor]:
        """The coordinate generator's state (stochastic OPT with a ``generator``), so that
        ``state_dict`` resumes the episodes' draws; empty otherwise."""
        if not self.stochastic or self.generator is None:
            return {}
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`get_extra_state` saved."""
        saved = state.get("generator")
        mine = self.stochastic and self.generator is not None
        if (saved is not None) != mine:
            raise ValueError(
                "the state_dict and this OPT layer disagree on the coordinate generator: "
                "build the layer as the saved one was (stochastic=True with a generator "
                "saves the generator's state; without one, nothing)"
            )
        if saved is not None:
            self.generator.set_state(saved)  # type: ignore[union-attr]

    def extra_repr(self) -> str:
        k = self.rotation.shape[0]
        mode = f", stochastic, subset_size={k}" if self.stochastic else ""
        return f"variant={self.variant!r}, d={self.neurons.shape[0]}{mode}"


def apply_opt(
    model: nn.Module,
    variant: str = "cayley",
    *,
    stochastic: bool = False,
    subset_size: int | None = None,
    exclude_classifier: bool = True,
    exclude: Collection[str | nn.Module] = (),
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Replace every ``Linear``/``Conv`` layer of ``model`` by an :class:`OPT` layer, in place.

    Args:
        model: the network.
        variant: see :class:`OPT`.
        stochastic: stochastic OPT (see :class:`OPT`).
        subset_size: coordinates per episode for stochastic OPT.
        exclude_classifier: keep the last ``Linear``/``Conv`` layer (in module order) unchanged.
        exclude: further layers to keep, as modules or qualified names (as in
            ``model.named_modules()``).
        generator: random source for every layer's V and coordinate subsets.

    Returns:
        ``model``, modified in place.
    """
    targets = select_layers(model, exclude=exclude)
    if exclude_classifier and targets:
        last = select_layers(model)[-1][1]
        targets = [(name, m) for name, m in targets if m is not last]
    if not targets:
        raise ValueError("model has no Linear/Conv layer left to re-parameterise")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        wrapped = OPT(
            module, variant, stochastic=stochastic, subset_size=subset_size, generator=generator
        )
        setattr(parent, child, wrapped)
    return model


def new_episode(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Start a new episode in every :class:`OPT` layer of ``model`` (:meth:`OPT.new_episode`)."""
    layers = [m for m in model.modules() if isinstance(m, OPT)]
    if not layers:
        raise ValueError("model has no OPT layer; call apply_opt(model, ...) first")
    for layer in layers:
        layer.new_episode(optimizer)
