"""Data sets generated on this machine: nothing is downloaded.

* ``mnist1d`` (the default): MNIST-1D (Greydanus 2020), 10 classes of 40-point signals,
  built by the ``mnist1d`` package from the templates it ships
  (``mnist1d.data.make_dataset(mnist1d.data.get_dataset_args())``: 4000 train / 1000 test,
  already centred and scaled to unit deviation by the generator) and cached on disk.
* ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), a stratified
  75/25 train/test split, features standardised with the training mean and deviation.
* ``spirals``: two interleaved spirals in the plane, $r = \\theta$, $\\theta \\in [\\pi/2, 3\\pi]$,
  the second rotated by $\\pi$, with Gaussian noise; standardised the same way.

Every data set carries a validation split carved from its training examples (the test set
is never touched to choose anything): the last ``VAL_FRACTION`` of a seeded permutation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

VAL_FRACTION = 0.125  # MNIST-1D: 3500 train / 500 validation out of its 4000 training signals
CACHE_ENV = "GEODYN_CACHE"


@dataclass(frozen=True)
class Dataset:
    """A classification task split into train, validation and test tensors (float32)."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int
    image_shape: tuple[int, ...] | None  # (length,) for signals, (h, w) for images

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def _standardise(x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """z = (x - mean) / std with the training statistics (constant features left at 0)."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std == 0] = 1.0
    return [(x - mean) / std for x in (x_train, *others)]


def _split_val(
    x: np.ndarray, y: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val): the last VAL_FRACTION of a ``seed`` permutation."""
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(VAL_FRACTION * len(y)))
    train, val = order[: len(y) - n_val], order[len(y) - n_val :]
    return x[train], y[train], x[val], y[val]


def _dataset(
    name: str,
    splits: tuple[np.ndarray, ...],
    n_classes: int,
    image_shape: tuple[int, ...] | None,
) -> Dataset:
    x_tr, y_tr, x_va, y_va, x_te, y_te = splits
    return Dataset(
        name=name,
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.as_tensor(y_tr, dtype=torch.int64),
        x_val=torch.as_tensor(x_va, dtype=torch.float32),
        y_val=torch.as_tensor(y_va, dtype=torch.int64),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.as_tensor(y_te, dtype=torch.int64),
        n_classes=n_classes,
        image_shape=image_shape,
    )


def _sklearn_split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    n_classes: int,
    image_shape: tuple[int, ...] | None,
) -> Dataset:
    from sklearn.model_selection import train_test_split

    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=seed
    )
    x_tr, y_tr, x_va, y_va = _split_val(x_tr, y_tr, seed)
    x_tr, x_va, x_te = _standardise(x_tr, x_va, x_te)
    return _dataset(name, (x_tr, y_tr, x_va, y_va, x_te, y_te), n_classes, image_shape)


def digits(seed: int = 0) -> Dataset:
    """scikit-learn's digits, split and standardised with ``seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _sklearn_split("digits", bunch.data.astype(np.float64), bunch.target, seed, 10, (8, 8))


def spirals(seed: int = 0, n_per_class: int = 500, noise: float = 0.3) -> Dataset:
    """Two interleaved spirals (2 classes, 2 features) drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    theta = rng.uniform(math.pi / 2, 3 * math.pi, size=(2, n_per_class))
    theta[1] += math.pi
    radius = theta - np.array([[0.0], [math.pi]])
    points = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=-1)
    points = points + noise * rng.standard_normal(points.shape)
    x = points.reshape(-1, 2)
    y = np.repeat(np.arange(2), n_per_class)
    return _sklearn_split("spirals", x, y, seed, 2, None)


# ---------------------------------------------------------------- MNIST-1D
def cache_dir() -> Path:
    """``$GEODYN_CACHE``, else ``$XDG_CACHE_HOME/geodyn``, else ``~/.cache/geodyn``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geodyn"


@contextmanager
def _global_rngs_kept() -> Iterator[None]:
    """Restore Python's and NumPy's global generators afterwards (mnist1d reseeds both)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _mnist1d_args() -> dict[str, object]:
    from mnist1d.data import get_dataset_args

    return dict(get_dataset_args(as_dict=True))


def generate_mnist1d() -> dict[str, np.ndarray]:
    """The package's own generator output: ``x``, ``y``, ``x_test``, ``y_test`` (no download).

    Python's and NumPy's global random states are the same before and after the call.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    with _global_rngs_kept():
        raw = make_dataset(get_dataset_args())
    return {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}


def mnist1d_arrays(cache: Path | None = None) -> dict[str, np.ndarray]:
    """MNIST-1D's arrays, built once and then read from ``cache`` (default :func:`cache_dir`).

    The file name carries a hash of the generator's arguments and the package version. It is
    written to a temporary file and renamed into place, so parallel processes that build at
    the same time each leave a complete file (``os.replace`` is atomic).
    """
    from importlib.metadata import version

    args = {k: v for k, v in _mnist1d_args().items() if k != "url"}
    key = json.dumps({"args": args, "mnist1d": version("mnist1d")}, sort_keys=True)
    folder = cache if cache is not None else cache_dir()
    path = folder / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            return {k: stored[k] for k in stored.files}
    arrays = generate_mnist1d()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"],
                     y_test=arrays["y_test"])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return arrays


def mnist1d(seed: int = 0) -> Dataset:
    """MNIST-1D: 3500 train / 500 validation (from the 4000 training signals, split with
    ``seed``) / 1000 test, as the generator scaled them."""
    a = mnist1d_arrays()
    x_tr, y_tr, x_va, y_va = _split_val(a["x"], a["y"], seed)
    return _dataset("mnist1d", (x_tr, y_tr, x_va, y_va, a["x_test"], a["y_test"]), 10, (40,))


DATASETS: dict[str, Callable[[int], Dataset]] = {
    "mnist1d": mnist1d, "digits": digits, "spirals": spirals,
}


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """The data set ``name`` (one of :data:`DATASETS`) split with ``seed``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name](seed)
