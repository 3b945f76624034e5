"""Timing, optimizer-state memory and the reference costs (noise, Cholesky-QR, QR)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["Timer", "cholesky_qr", "setup", "state_bytes", "tall", "timed"]


def setup(doc: str, steps: int) -> argparse.Namespace:
    """A micro-benchmark's command line, ``--steps`` and ``--threads`` (default 2), parsed;
    torch's threads set and its seed fixed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Median wall times of repeated calls of one job, timed in interleaved rounds.

    ``job()`` runs one repeat and returns the seconds of its inner part (for a
    training step: the optimizer step), or ``None`` when there is no inner part.
    """

    def __init__(self, job: Callable[[], float | None], device: torch.device) -> None:
        self.job = job
        self.device = device
        self.total: list[float] = []
        self.inner: list[float] = []

    def run(self, repeats: int, record: bool = True) -> None:
        for _ in range(repeats):
            _sync(self.device)
            start = time.perf_counter()
            inner = self.job()
            _sync(self.device)
            if record:
                self.total.append(time.perf_counter() - start)
                if inner is not None:
                    self.inner.append(inner)

    @property
    def median_ms(self) -> float:
        return 1e3 * statistics.median(self.total)

    @property
    def inner_median_ms(self) -> float:
        return 1e3 * statistics.median(self.inner) if self.inner else float("nan")


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by ``fn()`` (device-synchronised)."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _tensors(obj: object) -> Iterable[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def state_bytes(optimizer: Any) -> int:
    """Bytes of the distinct tensor storages in ``optimizer.state``.

    Optimizers held as attributes, alone or in a list or tuple (a wrapper's base
    optimizer, a chain's members), are counted too; a storage shared between them
    counts once.
    """
    seen: set[int] = set()
    total = 0
    stack = [optimizer]
    visited: set[int] = set()
    while stack:
        opt = stack.pop()
        if id(opt) in visited:
            continue
        visited.add(id(opt))
        for t in _tensors(list(opt.state.values())):
            storage = t.untyped_storage()
            key = storage.data_ptr() if storage.data_ptr() else id(storage)
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
        for value in vars(opt).values():
            inner = value if isinstance(value, (list, tuple)) else [value]
            stack += [v for v in inner if hasattr(v, "state") and hasattr(v, "step")]
    return total


def tall(x: Tensor) -> Tensor:
    """The matrix in the orientation with at least as many rows as columns."""
    return x if x.shape[-2] >= x.shape[-1] else x.mT


def cholesky_qr(x: Tensor) -> Tensor:
    r"""Orthonormal factor Q = X L^{-T} of a tall X, with L L^T = X^T X (Cholesky)."""
    chol = torch.linalg.cholesky(x.mT @ x)
    return torch.linalg.solve_triangular(chol.mT, x, upper=True, left=False)
