r"""Refusing parameters whose manifold points are split across ranks.

A manifold couples the entries of one point: the trailing ``manifold.ndim``
dimensions of a tensor, or only the axes a manifold declares in ``coupled_dims``
(an oblique matrix with ``dim=-1`` couples the entries of a row, not the
rows). A parameter may be sharded along any other dimension: each rank then holds
whole points and every verb is local, e.g. a ``(out, in)`` weight on
``Sphere()`` under FSDP2's ``Shard(0)``.

A point split across ranks is refused, with the fix in the message:

* a DTensor with a ``Shard(d)`` placement, d a coupled dimension (e.g. ``Stiefel``
  under ``Shard(0)``, whose X^T X = I needs every row);
* a parameter flattened by FSDP1 on any manifold but ``Euclidean``: its
  ``FlatParameter`` (a module's parameters flattened and concatenated, cut at
  arbitrary offsets), or with ``use_orig_params=True`` the original parameter, which
  then holds a 1-D slice of that vector (a (8, 6) weight was 46 entries on one
  rank and 2 on the other).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..manifolds import Manifold

__all__ = ["agree", "check_unsharded", "coupled_dims", "local"]


def coupled_dims(manifold: Manifold, dim: int) -> tuple[int, ...]:
    """The dimensions (in ``0..dim-1``) of a ``dim``-dimensional tensor coupled within a point.

    The manifold's declared ``coupled_dims`` (negative axes; by default its last
    ``ndim``), made non-negative.
    """
    return tuple(sorted(a % dim for a in manifold.coupled_dims)) if dim else ()


def local(t: Tensor) -> Tensor:
    """This rank's part of ``t``: the local shard of a DTensor (writes go through), else ``t``.

    After :func:`check_unsharded` a shard holds whole points, so every manifold verb
    on it is exact without communication.
    """
    to_local = getattr(t, "to_local", None)
    return t if to_local is None else to_local()


def agree(ok: bool, params: Iterable[Tensor]) -> bool:
    """Whether the step succeeded on every rank holding a shard of ``params``.

    Each rank checks only its own shard (finiteness, SHAKE): ``ok`` is reduced with MIN
    over the process group of the first DTensor among ``params``, so that every rank
    commits, skips or raises together. Without DTensors, ``ok`` itself.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return ok
    from torch.distributed.tensor import DTensor

    mesh = next((p.device_mesh for p in params if isinstance(p, DTensor)), None)
    if mesh is None:
        return ok
    device = torch.device(mesh.device_type)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    flag = torch.tensor([int(ok)], device=device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN, group=mesh.get_group())
    return bool(flag.item())


_PLAIN = (torch.Tensor, torch.nn.Parameter)  # exactly these types are no DTensor


def _sharded_dims(param: Tensor) -> tuple[int, ...]:
    """The tensor dimensions a DTensor ``param`` is sharded along (empty for a plain tensor)."""
    if type(param) in _PLAIN or not torch.distributed.is_available():
        return ()
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return ()
    return tuple(
        sorted({pl.dim % param.dim() for pl in param.placements if pl.is_shard()})  # type: ignore[attr-defined]
    )


def _fsdp1_flattened(param: Tensor) -> bool:
    """Whether FSDP1 flattened ``param`` (its FlatParameter, or an original parameter's slice)."""
    return bool(getattr(param, "_fsdp_flattened", False) or getattr(param, "_is_flat_param", False))


def check_unsharded(param: Tensor, manifold: Manifold) -> None:
    """Raise ``ValueError`` if a point of ``manifold`` in ``param`` is split across ranks.

    Passes for plain tensors, replicated DTensors, DTensors sharded only along batch
    dimensions (``Shard(0)`` of a row-wise manifold) and ``Euclidean`` parameters.
    """
    shape = tuple(param.shape)
    if _fsdp1_flattened(param):
        if manifold.ndim > 0:
            raise ValueError(
                f"parameter of shape {shape} was flattened by FSDP1 (FullyShardedDataParallel "
                f"holds a 1-D slice of a module's concatenated parameters), so its points on "
                f"{manifold!r} are not whole; use FSDP2 (torch.distributed.fsdp.fully_shard), "
                "or keep this module out of FSDP (ignored_states / ignored_modules)"
            )
        return
    sharded = _sharded_dims(param)
    split = sorted(set(sharded) & set(coupled_dims(manifold, param.dim()))) if sharded else []
    if split:
        placements = tuple(param.placements)  # type: ignore[attr-defined]
        raise ValueError(
            f"parameter of shape {shape} with placements {placements} is sharded along "
            f"dimension(s) {split}, which one point of {manifold!r} spans "
            f"(coupled dimensions {list(coupled_dims(manifold, param.dim()))}), so no rank "
            "holds a whole point; keep this module unsharded (fully_shard(..., "
            "ignored_params={param}) or leave it out of fully_shard), shard it along a "
            "batch dimension only (e.g. Shard(0) for a row-wise manifold), or gather it "
            "(param.redistribute(placements=[Replicate()])) before the step"
        )
