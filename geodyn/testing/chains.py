r"""Many short chains in parallel, and estimates whose errors come from the chains.

A manifold's verbs are batched over leading dimensions, so ONE parameter of shape
(chains, *point) is ``chains`` independent chains, and one optimizer step advances
them all. :func:`run_chains` records the reference's observables along the way.

Error bars need no tuning. The chains are independent, so each chain's time average
m_c is one independent draw (the batch-means estimator with a chain as the batch):
the mean of m_c over C chains has covariance S / C, S the sample covariance of the
m_c, whatever the autocorrelation inside a chain. The integrated autocorrelation
time tau_int (Sokal's self-consistent window) is measured as well and reported, with
the effective sample size C T / tau_int. A law is tested by Hotelling's T^2 on the k
observables: T^2 = C (m - mu)^T S^+ (m - mu), and (C - k) T^2 / (k (C - 1)) follows
F(k, C - k) for Gaussian chain means (k the rank of S).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

import geoopt
import torch
from scipy import stats
from torch import Tensor

from geodyn.integrators import Splitting
from geodyn.manifolds import Manifold

from .problems import DT, Potential, Reference

__all__ = [
    "ChainDesign", "Chains", "Estimate", "IntegratorFactory", "autocorrelation_time", "run_chains",
]

IntegratorFactory = Callable[[list[Tensor], float], torch.optim.Optimizer]
"""(params, h) -> an optimizer that samples exp(-U) on the params' manifold (tau = 1)."""


@dataclass(frozen=True)
class Estimate:
    """Means of k observables over chains x time, with errors from the chains.

    Attributes:
        mean: (k,) grand means.
        cov: (k, k) covariance of ``mean`` (chain means' sample covariance / C).
        chains: C, the number of independent chains.
        samples: C T, the number of recorded values per observable.
        tau: (k,) integrated autocorrelation times, in steps.
    """

    mean: Tensor
    cov: Tensor
    chains: int
    samples: int
    tau: Tensor

    @property
    def se(self) -> Tensor:
        return self.cov.diagonal().clamp(min=0).sqrt()

    @property
    def ess(self) -> Tensor:
        """Effective sample sizes C T thin / tau per observable."""
        return self.samples / self.tau.clamp(min=1.0)

    def z(self, expected: Tensor) -> Tensor:
        """(mean - expected) / se per observable (0 where both the error and se vanish)."""
        diff = self.mean - expected
        se = self.se
        off = torch.where(diff == 0, 0.0, diff.sign() * math.inf)
        return torch.where(se > 0, diff / se.clamp(min=1e-300), off)

    def hotelling(self, expected: Tensor) -> tuple[float, float, int]:
        """(T^2, p-value, rank k) of the joint test mean == expected."""
        diff = self.mean - expected
        evals, evecs = torch.linalg.eigh(self.cov)
        keep = evals > evals.max().clamp(min=0) * 1e-9
        k = int(keep.sum())
        if k == 0:  # every observable constant across chains: exact or not at all
            ok = bool(diff.abs().max() < 1e-12)
            return (0.0 if ok else math.inf), (1.0 if ok else 0.0), 0
        proj = evecs[:, keep].T @ diff
        t2 = float((proj * proj / evals[keep]).sum())
        c = self.chains
        if c <= k:
            raise ValueError(f"{c} chains cannot test {k} observables jointly; use more chains")
        f = (c - k) * t2 / (k * (c - 1))
        return t2, float(stats.f.sf(f, k, c - k)), k


def autocorrelation_time(series: Tensor, window: float = 5.0) -> Tensor:
    r"""Integrated autocorrelation time of each observable, from (chains, T, k) series.

    tau = 1 + 2 sum_{s=1}^{M} rho(s), rho the autocorrelation averaged over chains
    (FFT), M the smallest lag with M >= ``window`` tau(M) (Sokal's window).
    """
    c, t, k = series.shape
    x = series - series.mean(dim=(0, 1), keepdim=True)
    n = 1 << (2 * t - 1).bit_length()
    f = torch.fft.rfft(x, n=n, dim=1)
    acov = torch.fft.irfft(f * f.conj(), n=n, dim=1)[:, :t].mean(0)  # (T, k)
    var = acov[0]
    out = torch.ones(k, dtype=series.dtype)
    for j in range(k):
        if var[j] <= 0:
            continue
        rho = acov[:, j] / var[j] * t / (t - torch.arange(t, dtype=series.dtype))
        taus = 1 + 2 * torch.cumsum(rho[1:], 0)
        lags = torch.arange(1, t, dtype=series.dtype)
        ok = torch.nonzero(lags >= window * taus)
        m = int(ok[0]) if len(ok) else t - 2
        out[j] = taus[m].clamp(min=1.0) if t > 1 else 1.0
    return out


@dataclass(frozen=True)
class Chains:
    """Observables recorded along C chains: ``series`` (C, T, k), every ``thin`` steps."""

    series: Tensor
    names: tuple[str, ...]
    h: float
    steps: int
    burn: int
    thin: int
    final: Tensor
    optimizer: Any

    def estimate(self) -> Estimate:
        c, t, _ = self.series.shape
        means = self.series.mean(1)
        centred = means - means.mean(0)
        cov = centred.T @ centred / max(c - 1, 1) / c
        tau = autocorrelation_time(self.series) * self.thin
        return Estimate(means.mean(0), cov, c, c * t * self.thin, tau)


def closure_for(x: Tensor, potential: Potential | None) -> Callable[[], Tensor]:
    """Sets x.grad = grad U(x) and returns the chains' energies U(x), shape (chains,)."""

    def closure() -> Tensor:
        with torch.no_grad():
            if potential is None:
                x.grad = torch.zeros_like(x)
                return x.new_zeros(x.shape[0])
            x.grad = potential.gradient(x.detach())
            return potential.energy(x.detach())

    return closure


def starting_points(
    manifold: Manifold, reference: Reference, chains: int, generator: torch.Generator
) -> Tensor:
    """Exact draws of the reference law where it has a sampler, else ``random_point``."""
    if reference.sample is not None:
        return reference.sample(chains, generator).to(DT)
    return manifold.random_point(chains, *reference.shape, dtype=DT, generator=generator)


class ChainDesign(TypedDict, total=False):
    """The sample design keywords of :func:`run_chains` (its defaults), which the
    functions built on it (:func:`geodyn.testing.check_sampler`) pass through."""

    chains: int
    steps: int
    burn: int
    thin: int
    seed: int


def run_chains(
    integrator_factory: IntegratorFactory,
    manifold: Manifold,
    potential: Potential | None,
    reference: Reference,
    *,
    h: float,
    chains: int = 1000,
    steps: int = 400,
    burn: int = 100,
    thin: int = 1,
    seed: int = 0,
    start: Tensor | None = None,
) -> Chains:
    """Run ``chains`` chains of ``burn + steps`` steps as one batched parameter.

    Args:
        integrator_factory: (params, h) -> optimizer; it samples exp(-U) at tau = 1.
        manifold: the constraint set (the parameter is a ``ManifoldParameter`` on it).
        potential: U and its gradient (set into ``.grad`` before every step, and
            returned per chain by the closure); ``None`` for U = 0.
        reference: the observables to record (and the point shape, exact starts).
        h: the step size passed to the factory.
        chains, steps, burn, thin: C, recorded steps, discarded steps, record every.
        seed: seeds the starting points (and a ``Splitting`` optimizer's starting
            momenta, drawn from the Maxwellian P_x xi sqrt(tau): with exact draws of x the
            chains start in equilibrium in phase space, not at rest); the factory seeds
            its own noise.
        start: starting points (chains, *shape) instead of the reference's draws.
    """
    for name, value in (("chains", chains), ("steps", steps), ("thin", thin)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(burn, int) and burn >= 0):
        raise ValueError(f"burn must be an int >= 0, got {burn!r}")
    g = torch.Generator().manual_seed(seed)
    x0 = starting_points(manifold, reference, chains, g) if start is None else start.to(DT)
    x = geoopt.ManifoldParameter(x0.clone(), manifold=manifold)
    opt = integrator_factory([x], h)
    if isinstance(opt, Splitting):  # exact in phase space: Maxwellian momenta P_x xi sqrt(tau)
        xi = torch.randn(x0.shape, dtype=DT, generator=g)
        tau = opt.param_groups[0]["tau"]
        opt.state[x]["momentum"] = manifold.proj_tangent(x.detach(), xi) * math.sqrt(tau)
    closure = closure_for(x, potential)
    for _ in range(burn):
        opt.step(closure)  # type: ignore[arg-type]
    records = []
    for i in range(steps):
        opt.step(closure)  # type: ignore[arg-type]
        if (i + 1) % thin == 0:
            records.append(reference.observables(x.detach()))
    series = torch.stack(records, dim=1).to(DT)
    return Chains(series, reference.names, h, steps, burn, thin, x.detach().clone(), opt)
