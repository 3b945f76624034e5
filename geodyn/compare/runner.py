r"""Train one model with one method and one seed, recording per-epoch metrics.

Per epoch: train, validation and test loss and accuracy (full passes in evaluation mode),
the generalisation gap (train - test accuracy), the mean wall time of an optimisation step
(forward, backward, ``optimizer.step``; evaluation and the run's warm-up first step
excluded), the worst constraint residual ``max_p manifold.residual(p)`` over the
constrained parameters (also recorded after every step), the weights' Frobenius norm
$\lVert W \rVert = (\sum_l \lVert W_l \rVert_F^2)^{1/2}$ over the Linear/Conv layers and the
hidden layers' hyperspherical energy $E_1 = \sum_l \sum_{i \ne j}
\lVert \hat w_i - \hat w_j \rVert^{-1}$ (OPT's claim). A non-finite training loss or
parameter marks the run diverged and ends it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .data import Dataset
from .methods import Method
from .models import build_model, unbalance


@dataclass(frozen=True)
class RunSpec:
    """What one run trains: method, data set, model, seed and budget."""

    method: Method
    config: dict[str, Any]
    model: str
    seed: int
    epochs: int
    batch_size: int
    device: str
    unbalance: bool = False  # rescale hidden units by factors in [0.1, 10] first


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Mini-batches per epoch (the last one may be smaller)."""
    return -(-n_train // batch_size)


def parameters_on_manifolds(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> list[tuple[Tensor, Any]]:
    """(parameter, manifold) for every parameter held on a non-Euclidean constraint set."""
    from geodyn.manifolds import Euclidean, Manifold

    found: dict[int, tuple[Tensor, Any]] = {}
    for group in optimizer.param_groups:
        manifold = group.get("manifold")
        if isinstance(manifold, Manifold):
            for p in group["params"]:
                found[id(p)] = (p, manifold)
    for p in model.parameters():
        manifold = getattr(p, "manifold", None)
        if isinstance(manifold, Manifold) and id(p) not in found:
            found[id(p)] = (p, manifold)
    return [(p, m) for p, m in found.values() if not isinstance(m, Euclidean)]


def rotation_residual(model: nn.Module) -> float:
    r"""$\max \lvert R^\top R - I \rvert$ over the OPT layers' rotations (0.0 when none)."""
    from geodyn.methods.opt import OPT

    worst = 0.0
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, OPT):
                r = layer.rotation_matrix()
                eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
                worst = max(worst, float((r.mT @ r - eye).abs().max()))
    return worst


def layer_weights(model: nn.Module) -> list[Tensor]:
    """The weight of every Linear/Conv layer in order (an OPT layer's W = R V)."""
    from geodyn.methods.opt import OPT

    found: list[Tensor] = []

    def visit(module: nn.Module) -> None:
        if isinstance(module, OPT):
            found.append(module.weight)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            found.append(module.weight)
        else:
            for child in module.children():
                visit(child)

    visit(model)
    return found


@torch.no_grad()
def weight_norm(model: nn.Module) -> float:
    r"""$(\sum_l \lVert W_l \rVert_F^2)^{1/2}$ over the Linear/Conv layers."""
    return math.sqrt(sum(float(w.detach().square().sum()) for w in layer_weights(model)))


@torch.no_grad()
def hidden_energy(model: nn.Module) -> float:
    """Hyperspherical energy $E_1$ of every hidden layer's neurons, summed (not the classifier)."""
    from geodyn.methods.opt import hyperspherical_energy

    return sum(float(hyperspherical_energy(w.detach())) for w in layer_weights(model)[:-1])


def opt_rotations(model: nn.Module) -> list[Tensor]:
    """The rotation parameters of the OPT layers (held orthogonal by construction)."""
    from geodyn.methods.opt import OPT

    return [m.rotation for m in model.modules() if isinstance(m, OPT)]


def worst_residual(model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """max of ``manifold.residual(p)`` over the constrained parameters and of the OPT
    rotations' orthogonality defect (0.0 when nothing is constrained).

    The constrained parameters are looked up at every call: a method may constrain a
    parameter part-way through training (LAWN after its warm-up).
    """
    pairs = parameters_on_manifolds(model, optimizer)
    with torch.no_grad():
        manifold = max((float(m.residual(p.detach())) for p, m in pairs), default=0.0)
    return max(manifold, rotation_residual(model))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        loss += float(F.cross_entropy(logits, y[i : i + batch_size], reduction="sum"))
        correct += int((logits.argmax(-1) == y[i : i + batch_size]).sum())
    model.train()
    return loss / len(x), correct / len(x)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield order[i : i + batch_size]


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def run(spec: RunSpec, data: Dataset, progress: Any = None) -> dict[str, Any]:
    """Train per ``spec`` on ``data``; the run's record (see module docstring).

    ``progress`` is an optional object with ``update(n)`` and ``set_postfix(**kw)`` (a tqdm bar).
    """
    device = torch.device(spec.device)
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    x_va, y_va = data.x_val.to(device), data.y_val.to(device)
    x_te, y_te = data.x_test.to(device), data.y_test.to(device)
    model = build_model(spec.model, data, spec.seed)
    if spec.unbalance:
        unbalance(model, seed=spec.seed)
    model = model.to(device)
    spec.method.check(spec.config, steps_per_epoch(len(x_tr), spec.batch_size) * spec.epochs)
    model, optimizer = spec.method.build(model, dict(spec.config))
    generator = torch.Generator().manual_seed(spec.seed)

    epochs: list[dict[str, Any]] = []
    residual_trace = [worst_residual(model, optimizer)]
    diverged = False
    step = 0
    for epoch in range(1, spec.epochs + 1):
        step_time, n_steps, residual_max = 0.0, 0, residual_trace[-1]
        for idx in _batches(len(x_tr), spec.batch_size, generator):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if step > 0:  # the first step of a run pays one-off warm-up costs
                step_time += time.perf_counter() - t0
                n_steps += 1
            step += 1
            residual = worst_residual(model, optimizer)
            residual_trace.append(residual)
            residual_max = max(residual_max, residual)
            if progress is not None:
                progress.update(1)
        if not diverged and not _finite(model):
            diverged = True
        if diverged:
            break
        train_loss, train_acc = evaluate(model, x_tr, y_tr)
        val_loss, val_acc = evaluate(model, x_va, y_va)
        test_loss, test_acc = evaluate(model, x_te, y_te)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            diverged = True
            break
        epochs.append(
            {
                "epoch": epoch,
                "steps": step,
                "train_loss": train_loss,
                "train_acc": train_acc,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "gap": train_acc - test_acc,
                "time_per_step": step_time / max(n_steps, 1),
                "residual": residual_max,
                "weight_norm": weight_norm(model),
                "energy": hidden_energy(model),
            }
        )
        if progress is not None:
            progress.set_postfix(test_acc=f"{test_acc:.3f}", loss=f"{test_loss:.3f}")
    return {
        "method": spec.method.name,
        "seed": spec.seed,
        "config": spec.config,
        "diverged": diverged,
        "constrained_parameters": len(parameters_on_manifolds(model, optimizer))
        + len(opt_rotations(model)),
        "epochs": epochs,
        "residual_trace": residual_trace,
        "summary": summarise(epochs, residual_trace, diverged),
    }


def summarise(
    epochs: list[dict[str, Any]], residual_trace: list[float], diverged: bool
) -> dict[str, Any]:
    """Final and best test accuracy, final test loss and gap, mean time per step, worst residual."""
    if not epochs:
        return {
            "final_test_acc": None, "best_test_acc": None, "final_test_loss": None,
            "final_gap": None, "final_val_acc": None, "time_per_step": None,
            "max_residual": _finite_max(residual_trace), "diverged": diverged,
        }
    last = epochs[-1]
    return {
        "final_test_acc": last["test_acc"],
        "best_test_acc": max(e["test_acc"] for e in epochs),
        "final_test_loss": last["test_loss"],
        "final_gap": last["gap"],
        "final_val_acc": last["val_acc"],
        "time_per_step": sum(e["time_per_step"] for e in epochs) / len(epochs),
        "max_residual": _finite_max(residual_trace),
        "diverged": diverged,
    }


def _finite_max(values: list[float]) -> float | None:
    """The largest value, or None when any is non-finite (the run left its constraint set)."""
    if not all(math.isfinite(v) for v in values):
        return None
    return max(values, default=0.0)
