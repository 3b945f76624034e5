r"""Reference problems: a constraint set, a potential U and the exact law of exp(-U) on it.

Every sampler in geodyn targets the density exp(-U(x)) (temperature tau = 1) with
respect to the *surface* (Hausdorff) measure sigma_M of M in the embedding: the
Lebesgue measure of a full-dimensional set such as the ball, arclength on a curve,
Haar measure on O(n) and Stiefel(n, p). That is the law of constrained Langevin
dynamics with the embedded metric and tangent momenta (SHAKE/RATTLE; Lelievre,
Rousset and Stoltz, *Free energy computations*, 2010, sec. 3.3): the constrained
Hamiltonian flow preserves the Liouville measure of T^*M, whose position marginal
is sigma_M, and the thermostat is Gaussian in the tangent space. No Fixman term
enters because no coordinate is eliminated.

A :class:`Reference` states a law by observables with exact expectations: moments in
closed form, and the probabilities of bins of a scalar statistic under its exact
CDF (equiprobable bins, so a histogram test). A :class:`Problem` bundles a manifold,
a :class:`Potential` and a reference; the constructors below are the built-in ones,
and users add their own the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, optimize, special, stats
from torch import Tensor

from geodyn.constraints import Implicit
from geodyn.manifolds import (
    CircleLift,
    Euclidean,
    LpSphere,
    Manifold,
    NormBall,
    Oblique,
    Product,
    Sphere,
    Stiefel,
)

__all__ = [
    "PROBLEMS",
    "Potential",
    "Problem",
    "Reference",
    "ball_linear",
    "binned",
    "circle_double_well",
    "circle_lift",
    "gaussian",
    "haar_stiefel",
    "lp_circle",
    "oblique_uniform",
    "pendulum",
    "product",
    "torus",
    "uniform_ball",
    "uniform_sphere",
    "von_mises_fisher",
]

DT = torch.float64
Sampler = Callable[[int, torch.Generator], Tensor]


@dataclass(frozen=True)
class Potential:
    """U(x) for a batch of points, shape (*batch, *point) -> (*batch,), and its gradient.

    ``grad`` is dU/dx (same shape as x); autograd of ``energy`` when omitted.
    """

    energy: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor] | None = None

    def gradient(self, x: Tensor) -> Tensor:
        if self.grad is not None:
            return self.grad(x)
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(z).sum(), z)
        return g


@dataclass(frozen=True)
class Reference:
    """The exact law of a problem, as observables with exact expectations.

    Attributes:
        shape: the shape of one point.
        observables: points (chains, *shape) -> values (chains, k).
        expected: the k exact expectations.
        names: the k observables' names.
        law: one line saying what the law is.
        sample: exact draws (n, generator) -> (n, *shape), used to start chains in
            equilibrium; ``None`` where no exact sampler is at hand.
    """

    shape: tuple[int, ...]
    observables: Callable[[Tensor], Tensor]
    expected: tuple[float, ...]
    names: tuple[str, ...]
    law: str
    sample: Sampler | None = None

    def __post_init__(self) -> None:
        if len(self.expected) != len(self.names):
            raise ValueError(
                f"expected has {len(self.expected)} values but names has {len(self.names)}"
            )

    def join(self, other: Reference, law: str | None = None) -> Reference:
        """Both references' observables on the same points."""
        if other.shape != self.shape:
            raise ValueError(f"shapes differ: {self.shape} and {other.shape}")
        first, second = self.observables, other.observables

        def observe(x: Tensor) -> Tensor:
            return torch.cat([first(x), second(x)], dim=-1)

        return Reference(
            self.shape,
            observe,
            self.expected + other.expected,
            self.names + other.names,
            law or f"{self.law}; {other.law}",
            self.sample if self.sample is not None else other.sample,
        )


@dataclass(frozen=True)
class Problem:
    """A manifold, a potential (``None``: U = 0) and the exact law of exp(-U) d sigma_M."""

    name: str
    manifold: Manifold
    potential: Potential | None
    reference: Reference


# ---------------------------------------------------------------------- building blocks
def binned(
    statistic: Callable[[Tensor], Tensor],
    cdf: Callable[[float], float],
    support: tuple[float, float],
    shape: tuple[int, ...],
    *,
    bins: int = 6,
    name: str = "s",
    law: str = "",
    sample: Sampler | None = None,
) -> Reference:
    """Indicators of ``bins`` equiprobable bins of a scalar statistic under its exact CDF.

    The bin edges solve cdf(e_j) = j / bins (Brent's method on ``support``); the last
    bin's indicator is left out (the indicators sum to one).
    """
    lo, hi = support
    edges = [optimize.brentq(lambda t, q=j / bins: cdf(t) - q, lo, hi) for j in range(1, bins)]
    inner = torch.tensor(edges, dtype=DT)

    def observe(x: Tensor) -> Tensor:
        s = statistic(x).to(DT).contiguous()
        index = torch.bucketize(s, inner.to(s.device))
        return torch.nn.functional.one_hot(index, bins)[..., :-1].to(DT)

    names = tuple(f"P({name} in bin {j + 1}/{bins})" for j in range(bins - 1))
    return Reference(shape, observe, (1.0 / bins,) * (bins - 1), names, law, sample)


def moments(
    observe: Callable[[Tensor], Tensor],
    expected: Sequence[float],
    names: Sequence[str],
    shape: tuple[int, ...],
    law: str = "",
    sample: Sampler | None = None,
) -> Reference:
    """Observables with closed-form expectations."""
    return Reference(shape, observe, tuple(float(e) for e in expected), tuple(names), law, sample)


def _density_cdf(
    density: Callable[[float], float], support: tuple[float, float]
) -> Callable[[float], float]:
    """The CDF of an unnormalised density on an interval, by adaptive quadrature."""
    lo, hi = support
    total = integrate.quad(density, lo, hi, limit=200)[0]
    return lambda t: integrate.quad(density, lo, min(max(t, lo), hi), limit=200)[0] / total


def _expectation(
    f: Callable[[float], float], density: Callable[[float], float], support: tuple[float, float]
) -> float:
    lo, hi = support
    num = integrate.quad(lambda t: f(t) * density(t), lo, hi, limit=200)[0]
    return num / integrate.quad(density, lo, hi, limit=200)[0]


def _tabulated_sampler(
    density: Callable[[np.ndarray], np.ndarray], support: tuple[float, float], grid: int = 1 << 16
) -> Callable[[int, torch.Generator], Tensor]:
    """Inverse-CDF draws of a scalar from its density tabulated on a fine grid."""
    t = np.linspace(*support, grid + 1)
    cum = integrate.cumulative_trapezoid(density(t), t, initial=0.0)
    cum /= cum[-1]

    def draw(n: int, g: torch.Generator) -> Tensor:
        u = torch.rand(n, dtype=DT, generator=g).numpy()
        return torch.from_numpy(np.interp(u, cum, t))

    return draw


def _np_generator(g: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))


def _angle(x: Tensor) -> Tensor:
    return torch.atan2(x[..., 1], x[..., 0])


# ---------------------------------------------------------------------- the built-in laws
def uniform_sphere(d: int = 3) -> Problem:
    """U = 0 on S^(d-1): (x_1 + 1)/2 ~ Beta((d-1)/2, (d-1)/2), E[x] = 0."""
    law = stats.beta((d - 1) / 2, (d - 1) / 2)
    ref = binned(
        lambda x: x[..., 0],
        lambda t: float(law.cdf((t + 1) / 2)),
        (-1.0, 1.0),
        (d,),
        name="x_1",
        law=f"uniform on S^{d - 1}: (x_1 + 1)/2 ~ Beta({(d - 1) / 2}, {(d - 1) / 2}), E x = 0",
        sample=lambda n, g: Sphere().random_point(n, d, dtype=DT, generator=g),
    ).join(moments(lambda x: x, [0.0] * d, [f"E x_{j + 1}" for j in range(d)], (d,)))
    return Problem(f"uniform S^{d - 1}", Sphere(), None, ref)


def von_mises_fisher(d: int = 3, kappa: float = 2.0) -> Problem:
    r"""U = -kappa x_d on S^(d-1): E[mu.x] = I_{d/2}(kappa) / I_{d/2-1}(kappa).

    For d = 3 that is coth(kappa) - 1/kappa.

    The statistic w = mu.x has density exp(kappa w) (1 - w^2)^((d-3)/2) on [-1, 1].
    """
    mean = float(special.ive(d / 2, kappa) / special.ive(d / 2 - 1, kappa))

    def density(w: float) -> float:
        return math.exp(kappa * (w - 1)) * (1 - w * w) ** ((d - 3) / 2)

    mu = np.zeros(d)
    mu[-1] = 1.0
    vmf = stats.vonmises_fisher(mu, kappa)

    def sample(n: int, g: torch.Generator) -> Tensor:
        return torch.from_numpy(vmf.rvs(n, random_state=_np_generator(g))).to(DT)

    def energy(x: Tensor) -> Tensor:
        return -kappa * x[..., -1]

    def grad(x: Tensor) -> Tensor:
        g = torch.zeros_like(x)
        g[..., -1] = -kappa
        return g

    law = f"von Mises-Fisher on S^{d - 1}, kappa {kappa}: E[mu.x] = {mean:.6f}"
    ref = moments(lambda x: x[..., -1:], [mean], ["E mu.x"], (d,), law, sample).join(
        binned(lambda x: x[..., -1], _density_cdf(density, (-1.0, 1.0)), (-1.0, 1.0), (d,),
               name="mu.x")
    )
    return Problem(f"vMF S^{d - 1} k={kappa:g}", Sphere(), Potential(energy, grad), ref)


def _ball_points(n: int, d: int, g: torch.Generator) -> Tensor:
    u = Sphere().random_point(n, d, dtype=DT, generator=g)
    return u * torch.rand(n, 1, dtype=DT, generator=g) ** (1.0 / d)


def uniform_ball(d: int = 3) -> Problem:
    """U = 0 on the unit ball of R^d: E|x|^2 = d/(d+2), |x|^d ~ U(0, 1)."""
    ref = moments(
        lambda x: (x * x).sum(-1, keepdim=True),
        [d / (d + 2)],
        ["E|x|^2"],
        (d,),
        f"uniform on the unit ball of R^{d}: E|x|^2 = {d}/{d + 2}, |x|^{d} ~ U(0, 1)",
        lambda n, g: _ball_points(n, d, g),
    ).join(binned(lambda x: x.norm(dim=-1) ** d, lambda t: t, (0.0, 1.0), (d,), name="|x|^d"))
    return Problem(f"uniform ball R^{d}", NormBall(), None, ref)


def ball_linear(d: int = 3, a: float = 2.0) -> Problem:
    """U = a x_1 on the unit ball: x_1 has density exp(-a t) (1 - t^2)^((d-1)/2) (quadrature)."""

    def density(t: float) -> float:
        return math.exp(-a * (t + 1)) * (1 - t * t) ** ((d - 1) / 2)

    mean = _expectation(lambda t: t, density, (-1.0, 1.0))
    # |x|^2 = x_1^2 + |x_perp|^2 with x_perp uniform in the (d-1)-ball of radius sqrt(1 - t^2)
    sq = _expectation(lambda t: t * t + (1 - t * t) * (d - 1) / (d + 1), density, (-1.0, 1.0))

    def grad(x: Tensor) -> Tensor:
        g = torch.zeros_like(x)
        g[..., 0] = a
        return g

    law = f"exp(-{a} x_1) on the unit ball of R^{d}: E x_1 = {mean:.6f}, E|x|^2 = {sq:.6f}"
    ref = moments(
        lambda x: torch.stack([x[..., 0], (x * x).sum(-1)], dim=-1),
        [mean, sq],
        ["E x_1", "E|x|^2"],
        (d,),
        law,
    ).join(binned(lambda x: x[..., 0], _density_cdf(density, (-1.0, 1.0)), (-1.0, 1.0), (d,),
                  name="x_1"))
    return Problem(f"ball R^{d} U={a:g}x_1", NormBall(), Potential(lambda x: a * x[..., 0], grad),
                   ref)


def haar_stiefel(n: int = 3, p: int = 3) -> Problem:
    """U = 0 on Stiefel(n, p) (O(n) for p = n): E X = 0, E[X X^T] = (p/n) I (p < n),
    E[(tr X)^2] = 1 (p = n, n >= 2), and X_11^2 ~ Beta(1/2, (n-1)/2).
    """
    iu = torch.triu_indices(n, n)
    eye = torch.eye(n, dtype=DT)
    law = stats.beta(0.5, (n - 1) / 2)

    def entry_cdf(t: float) -> float:  # X_11 is symmetric with X_11^2 ~ Beta(1/2, (n-1)/2)
        return 0.5 + 0.5 * math.copysign(float(law.cdf(t * t)), t)

    def sample(m: int, g: torch.Generator) -> Tensor:
        q = stats.ortho_group(n).rvs(m, random_state=_np_generator(g)).reshape(m, n, n)
        return torch.from_numpy(q[..., :p].copy()).to(DT)

    def observe(x: Tensor) -> Tensor:
        first = x.flatten(-2)
        if p == n:  # X X^T = I identically on O(n): the second moment E[(tr X)^2] = 1 instead
            return torch.cat([first, x.diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) ** 2], -1)
        xx = x @ x.transpose(-1, -2)
        return torch.cat([first, xx[..., iu[0], iu[1]]], -1)

    names = [f"E X_{i + 1}{j + 1}" for i in range(n) for j in range(p)]
    expected = [0.0] * (n * p)
    if p == n:
        names, expected = names + ["E (tr X)^2"], expected + [1.0]
    else:
        pairs = zip(iu[0].tolist(), iu[1].tolist(), strict=True)
        names += [f"E (X X^T)_{i + 1}{j + 1}" for i, j in pairs]
        expected += (p / n * eye)[iu[0], iu[1]].tolist()
    what = "O" + str(n) if p == n else f"Stiefel({n},{p})"
    moment = "E[(tr X)^2] = 1" if p == n else f"E[X X^T] = ({p}/{n}) I"
    ref = moments(observe, expected, names, (n, p),
                  f"Haar on {what}: E X = 0, {moment}, X_11^2 ~ Beta(1/2, {(n - 1) / 2})",
                  sample).join(
        binned(lambda x: x[..., 0, 0], entry_cdf, (-1.0, 1.0), (n, p), name="X_11")
    )
    return Problem(f"Haar {what}", Stiefel(), None, ref)


def oblique_uniform(rows: int = 2, d: int = 3) -> Problem:
    """U = 0 on the oblique manifold (rows on S^(d-1)): rows independent, each uniform."""
    law = stats.beta((d - 1) / 2, (d - 1) / 2)
    shape = (rows, d)

    def sample(n: int, g: torch.Generator) -> Tensor:
        return Sphere().random_point(n, rows, d, dtype=DT, generator=g)

    ref = binned(lambda x: x[..., 0, 0], lambda t: float(law.cdf((t + 1) / 2)), (-1.0, 1.0),
                 shape, name="x_11",
                 law=f"{rows} independent uniform rows on S^{d - 1}", sample=sample).join(
        moments(lambda x: (x[..., 0, :] * x[..., 1, :]).sum(-1, keepdim=True) ** 2,
                [1.0 / d], ["E (x_1. x_2.)^2"], shape)
    )
    return Problem(f"Oblique {rows}x{d}", Oblique(), None, ref)


def circle_lift(radius: float = 0.5) -> Problem:
    """U = 0 on the circle lift: the weight q = r cos(theta) follows the arcsine law on [-r, r]."""
    r = radius

    def sample(n: int, g: torch.Generator) -> Tensor:
        t = 2 * math.pi * torch.rand(n, dtype=DT, generator=g)
        return r * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)

    ref = binned(
        lambda x: x[..., 0],
        lambda q: 0.5 + math.asin(max(-1.0, min(1.0, q / r))) / math.pi,
        (-r, r),
        (2,),
        name="q",
        law=f"the weight q of a uniform point on the circle of radius {r}: arcsine on [-{r}, {r}]",
        sample=sample,
    ).join(moments(lambda x: x[..., :1] ** 2, [r * r / 2], ["E q^2"], (2,)))
    return Problem(f"CircleLift r={r:g}", CircleLift(r), None, ref)


def lp_circle(p: float = 3.0) -> Problem:
    r"""U = 0 on the unit Lp circle in R^2: the angle theta has density ds/dtheta (arclength).

    With x(theta) = rho(theta) (cos theta, sin theta), rho = ||(cos, sin)||_p^(-1),
    ds/dtheta = sqrt(rho^2 + rho'^2); the CDF of theta is by quadrature.
    """

    def rho(t: np.ndarray) -> np.ndarray:
        return (np.abs(np.cos(t)) ** p + np.abs(np.sin(t)) ** p) ** (-1 / p)

    def speed(t: np.ndarray) -> np.ndarray:
        c, s = np.cos(t), np.sin(t)
        # rho' = -rho^(p+1) (|s|^p - |c|^p)' / p, with (|u|^p)' = p |u|^(p-1) sign(u) u'
        d = np.abs(s) ** (p - 1) * np.sign(s) * c - np.abs(c) ** (p - 1) * np.sign(c) * s
        r = rho(t)
        return np.sqrt(r * r + (r ** (p + 1) * d) ** 2)

    draw = _tabulated_sampler(speed, (-math.pi, math.pi))

    def sample(n: int, g: torch.Generator) -> Tensor:
        t = draw(n, g)
        radius = torch.from_numpy(rho(t.numpy())).unsqueeze(-1)
        return radius * torch.stack([torch.cos(t), torch.sin(t)], dim=-1)

    def arclength(t: float) -> float:
        return float(speed(np.array(t)))

    circle = (-math.pi, math.pi)
    c4 = _expectation(lambda t: math.cos(4 * t), arclength, circle)
    law = f"arclength on the unit L{p:g} circle: the angle's law by quadrature"
    ref = moments(lambda x: torch.cos(4 * _angle(x)).unsqueeze(-1), [c4], ["E cos 4theta"], (2,),
                  law, sample).join(
        binned(_angle, _density_cdf(arclength, circle), circle, (2,), bins=8, name="theta")
    )
    return Problem(f"Lp circle p={p:g}", LpSphere(p), None, ref)


def torus(big: float = 2.0, small: float = 0.5) -> Problem:
    r"""U = 0 on the torus (|x_12| - R)^2 + x_3^2 = r^2 (an Implicit manifold).

    Surface measure r (R + r cos theta) dtheta dphi: phi is uniform, theta has density
    R + r cos theta, and E|x_12| = R + r^2 / (2R).
    """
    R, r = big, small

    def c(x: Tensor) -> Tensor:
        return (torch.sqrt(x[0] ** 2 + x[1] ** 2) - R) ** 2 + x[2] ** 2 - r * r

    draw = _tabulated_sampler(lambda t: R + r * np.cos(t), (-math.pi, math.pi))

    def sample(n: int, g: torch.Generator) -> Tensor:
        theta = draw(n, g)
        phi = 2 * math.pi * torch.rand(n, dtype=DT, generator=g)
        rho = R + r * torch.cos(theta)
        return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), r * torch.sin(theta)], -1)

    def tube_angle(x: Tensor) -> Tensor:
        return torch.atan2(x[..., 2], x[..., :2].norm(dim=-1) - R)

    def theta_cdf(t: float) -> float:
        return (R * (t + math.pi) + r * math.sin(t)) / (2 * math.pi * R)

    ref = moments(lambda x: x[..., :2].norm(dim=-1, keepdim=True), [R + r * r / (2 * R)],
                  ["E|x_12|"], (3,), f"surface measure on the torus R={R:g}, r={r:g}",
                  sample).join(
        binned(tube_angle, theta_cdf, (-math.pi, math.pi), (3,), name="theta")
    ).join(binned(_angle, lambda t: (t + math.pi) / (2 * math.pi), (-math.pi, math.pi), (3,),
                  bins=4, name="phi"))
    return Problem(f"torus R={R:g} r={r:g}", Implicit(c, n=3, name="torus"), None, ref)


def circle_double_well(a: float = 1.5) -> Problem:
    r"""U = a (x_1^2 - x_2^2) = a cos(2 theta) on S^1: two wells, barrier 2a.

    E[cos 2 theta] = -I_1(a) / I_0(a); theta has density exp(-a cos 2 theta).
    """
    mean = -float(special.ive(1, a) / special.ive(0, a))
    dens = _tabulated_sampler(lambda t: np.exp(-a * np.cos(2 * t)), (-math.pi, math.pi))

    def sample(n: int, g: torch.Generator) -> Tensor:
        t = dens(n, g)
        return torch.stack([torch.cos(t), torch.sin(t)], -1)

    def energy(x: Tensor) -> Tensor:
        return a * (x[..., 0] ** 2 - x[..., 1] ** 2)

    def grad(x: Tensor) -> Tensor:
        return 2 * a * torch.stack([x[..., 0], -x[..., 1]], -1)

    cdf = _density_cdf(lambda t: math.exp(-a * math.cos(2 * t)), (-math.pi, math.pi))
    ref = moments(lambda x: (x[..., :1] ** 2 - x[..., 1:] ** 2), [mean], ["E cos 2theta"], (2,),
                  f"exp(-{a:g} cos 2theta) on S^1: E cos 2theta = {mean:.6f}", sample).join(
        binned(_angle, cdf, (-math.pi, math.pi), (2,), bins=8, name="theta")
    )
    return Problem(f"double well S^1 a={a:g}", Sphere(), Potential(energy, grad), ref)


def gaussian(d: int = 2) -> Problem:
    """U = |x|^2 / 2 on R^d (Euclidean): x_1 ~ N(0, 1), E|x|^2 = d."""
    ref = binned(lambda x: x[..., 0], lambda t: float(stats.norm.cdf(t)), (-40.0, 40.0), (d,),
                 name="x_1", law=f"standard normal on R^{d}",
                 sample=lambda n, g: torch.randn(n, d, dtype=DT, generator=g)).join(
        moments(lambda x: (x * x).sum(-1, keepdim=True), [float(d)], ["E|x|^2"], (d,))
    )
    return Problem(f"Gaussian R^{d}", Euclidean(), Potential(lambda x: 0.5 * (x * x).sum(-1),
                                                             lambda x: x), ref)


def product(*problems: Problem) -> Problem:
    """Factors independent, each with its own law: U is the sum, observables per factor.

    Adds the cross moment of the factors' first observables, E[f g] = E[f] E[g].
    """
    factors = [(p.manifold, p.reference.shape) for p in problems]
    manifold = Product(*factors)
    sizes = [math.prod(s) for _, s in factors]
    offsets = np.cumsum([0, *sizes]).tolist()

    def parts(x: Tensor) -> list[Tensor]:
        return [
            x[..., offsets[i] : offsets[i + 1]].reshape(*x.shape[:-1], *p.reference.shape)
            for i, p in enumerate(problems)
        ]

    def observe(x: Tensor) -> Tensor:
        values = [p.reference.observables(part) for p, part in zip(problems, parts(x), strict=True)]
        cross = values[0][..., :1] * values[1][..., :1]
        return torch.cat([*values, cross], dim=-1)

    expected: tuple[float, ...] = ()
    names: tuple[str, ...] = ()
    for i, p in enumerate(problems):
        expected += p.reference.expected
        names += tuple(f"[{i}] {n}" for n in p.reference.names)
    expected += (problems[0].reference.expected[0] * problems[1].reference.expected[0],)
    names += ("E f_0 g_0 (independence)",)

    potentials = [p.potential for p in problems]

    def energy(x: Tensor) -> Tensor:
        return sum((u.energy(part) for u, part in zip(potentials, parts(x), strict=True)
                    if u is not None), torch.zeros(x.shape[:-1], dtype=x.dtype))

    def grad(x: Tensor) -> Tensor:
        return torch.cat([
            (torch.zeros_like(part) if u is None else u.gradient(part)).reshape(*x.shape[:-1], -1)
            for u, part in zip(potentials, parts(x), strict=True)], dim=-1)

    samplers = [p.reference.sample for p in problems]
    sample = None
    if all(s is not None for s in samplers):
        def sample(n: int, g: torch.Generator) -> Tensor:
            return torch.cat([s(n, g).reshape(n, -1) for s in samplers], dim=-1)  # type: ignore[misc]

    ref = Reference((sum(sizes),), observe, expected, names,
                    " x ".join(p.reference.law.split(":")[0] for p in problems) + ", independent",
                    sample)
    has_u = any(u is not None for u in potentials)
    return Problem(" x ".join(p.name for p in problems), manifold,
                   Potential(energy, grad) if has_u else None, ref)


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "gaussian": gaussian,
    "sphere": uniform_sphere,
    "vmf2": von_mises_fisher,
    "vmf4": lambda: von_mises_fisher(5, 3.0),
    "double-well": circle_double_well,
    "oblique": oblique_uniform,
    "haar-o3": haar_stiefel,
    "stiefel-5-2": lambda: haar_stiefel(5, 2),
    "ball": uniform_ball,
    "ball-linear": ball_linear,
    "circle-lift": circle_lift,
    "lp3": lp_circle,
    "lp1.5": lambda: lp_circle(1.5),
    "product": lambda: product(von_mises_fisher(3, 1.0), circle_lift(0.5)),
    "torus": torus,
}
"""The built-in problems by name (each built on demand)."""


def pendulum(kappa: float = 4.0) -> Problem:
    r"""U = -kappa q on the unit circle lift (q = cos theta): E q = I_1(kappa) / I_0(kappa).

    The circle lift's drift is the exact rotation, so every h is stable for the drift;
    the bias of a scheme comes from the potential's anharmonicity alone.
    """
    mean = float(special.ive(1, kappa) / special.ive(0, kappa))
    draw = _tabulated_sampler(lambda t: np.exp(kappa * (np.cos(t) - 1)), (-math.pi, math.pi))

    def sample(n: int, g: torch.Generator) -> Tensor:
        t = draw(n, g)
        return torch.stack([torch.cos(t), torch.sin(t)], -1)

    def grad(x: Tensor) -> Tensor:
        return torch.stack([torch.full_like(x[..., 0], -kappa), torch.zeros_like(x[..., 1])], -1)

    cdf = _density_cdf(lambda t: math.exp(kappa * (math.cos(t) - 1)), (-math.pi, math.pi))
    ref = moments(lambda x: x[..., :1], [mean], ["E q"], (2,),
                  f"exp({kappa:g} cos theta) on the circle: E q = {mean:.6f}", sample).join(
        binned(_angle, cdf, (-math.pi, math.pi), (2,), bins=8, name="theta")
    )
    return Problem(f"pendulum k={kappa:g}", CircleLift(1.0),
                   Potential(lambda x: -kappa * x[..., 0], grad), ref)


PROBLEMS["pendulum"] = pendulum
