"""Checkpoint a constrained Langevin run, resume it in fresh objects, and check it is bit-identical.

Run with ``python examples/checkpoint.py``. A small MLP with unit-norm neurons and an
orthogonal layer is sampled by constrained BAOAB (tau > 0, so the optimizer draws noise).
One run goes 200 steps straight; another stops after 120, saves model, optimizer, LR
scheduler and the data generator, and the rest of the run is done by new objects built
with another seed that load the checkpoint with ``torch.load(weights_only=True)``.
"""

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from geodyn.constraints import orthogonal, residuals, unit_norm_neurons
from geodyn.integrators import Splitting

STEPS, STOP = 200, 120


def make_data(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(1024, 10, generator=generator)
    return x, ((x[:, 0] * x[:, 1] + torch.sin(2 * x[:, 2])) > 0).long()


X, Y = make_data(torch.Generator().manual_seed(0))


def build(seed: int):
    """Model, optimizer, LR scheduler and data generator, all from ``seed``."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 2))
    unit_norm_neurons(model[0])
    orthogonal(model[2])
    optimizer = Splitting(model.parameters(), lr=0.05, gamma=1.0, tau=1e-4, seed=seed)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50, gamma=0.5)
    data = torch.Generator().manual_seed(seed)  # draws the mini-batches
    return model, optimizer, scheduler, data


def train(model, optimizer, scheduler, data, steps: int) -> None:
    for _ in range(steps):
        idx = torch.randint(0, len(X), (64,), generator=data)
        optimizer.zero_grad()
        F.cross_entropy(model(X[idx]), Y[idx]).backward()
        optimizer.step()
        scheduler.step()


def main() -> None:
    # Small tensors: one thread is fastest. Bit-identity also needs the resumed run to use
    # the thread count of the run it continues (reductions are summed in another order).
    torch.set_num_threads(1)
    straight = build(seed=0)
    train(*straight, STEPS)

    model, optimizer, scheduler, data = build(seed=0)
    train(model, optimizer, scheduler, data, STOP)
    path = Path(tempfile.mkdtemp()) / "checkpoint.pt"
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),  # includes the noise generator's state
            "scheduler": scheduler.state_dict(),
            "data": data.get_state(),
        },
        path,
    )
    print(f"saved after {STOP} steps: {path} ({path.stat().st_size} bytes)")

    model, optimizer, scheduler, data = build(seed=1)  # fresh objects, another seed
    saved = torch.load(path, weights_only=True)  # plain tensors and containers only
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    data.set_state(saved["data"])
    train(model, optimizer, scheduler, data, STEPS - STOP)

    pairs = list(zip(straight[0].parameters(), model.parameters(), strict=True))
    same = all(torch.equal(p, q) for p, q in pairs)
    worst = max(float((p - q).detach().abs().max()) for p, q in pairs)
    print(f"resumed for {STEPS - STOP} steps; largest difference to the straight run: {worst:.1e}")
    print(f"bit-identical: {same}")
    for name, res in residuals(model).items():
        print(f"  residual {name:40s} {res:.1e}")


if __name__ == "__main__":
    main()
