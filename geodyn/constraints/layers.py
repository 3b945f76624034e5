"""Choosing a network's layers: the one selector every preset and method uses."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

__all__ = ["LAYER_TYPES", "select_layers"]

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layers whose ``weight`` the presets constrain: ``nn.Linear`` and ``nn.Conv{1,2,3}d``."""


def select_layers(
    model: nn.Module,
    layers: Iterable[nn.Module | str] | None = None,
    *,
    exclude: Iterable[nn.Module | str] = (),
    kinds: tuple[type[nn.Module], ...] = LAYER_TYPES,
) -> list[tuple[str, nn.Module]]:
    """Layers of ``model`` as (qualified name, module): in the order of ``layers`` when it
    is given, else in module order.

    Args:
        model: the network.
        layers: the layers to take, as modules or qualified names (as in
            ``model.named_modules()``); ``None``: every module of type ``kinds``.
        exclude: layers to leave out, as modules or qualified names.
        kinds: the module types taken when ``layers`` is ``None``.

    Raises:
        ValueError: a name that is not a submodule of ``model``, a module that is not
            in it, or an entry that is neither.
    """
    named = list(model.named_modules())
    left_out = _chosen(named, exclude, "exclude")
    if layers is None:
        chosen = {id(m): (n, m) for n, m in named if isinstance(m, kinds)}
    else:
        chosen = _chosen(named, layers, "layers")
    return [layer for key, layer in chosen.items() if key not in left_out]


def _chosen(
    named: list[tuple[str, nn.Module]], items: Iterable[nn.Module | str], argument: str
) -> dict[int, tuple[str, nn.Module]]:
    """The modules ``items`` names or holds, keyed by id, in the order given."""
    by_name = dict(named)
    by_id = {id(m): (n, m) for n, m in named}
    out: dict[int, tuple[str, nn.Module]] = {}
    unknown: list[str] = []
    for item in items:
        if isinstance(item, str) and item in by_name:
            out.setdefault(id(by_name[item]), (item, by_name[item]))
        elif isinstance(item, str):
            unknown.append(repr(item))
        elif isinstance(item, nn.Module) and id(item) in by_id:
            out.setdefault(id(item), by_id[id(item)])
        elif isinstance(item, nn.Module):
            unknown.append(f"a {type(item).__name__}")
        else:
            raise ValueError(
                f"{argument} takes modules or qualified module names, got {type(item).__name__}"
            )
    if unknown:
        raise ValueError(
            f"{argument} lists {', '.join(unknown)}, which are not modules of the model "
            "(not a submodule of model.named_modules()); pass qualified names or the modules"
        )
    return out
