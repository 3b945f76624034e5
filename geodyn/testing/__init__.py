"""The law suite every geodyn manifold obeys, and hypothesis strategies to drive it.

```python
geodyn.testing.check_manifold(geodyn.manifolds.Sphere(), shape=(4, 3))
```
runs every law with hypothesis and returns a report of the worst numbers seen.
``check_sampler`` tests a sampler's law against a reference problem (many chains in
parallel, errors from the chains), and ``weak_order`` measures its bias against h.
Requires ``hypothesis``.
"""

from .chains import ChainDesign, Chains, Estimate, autocorrelation_time, run_chains
from .check import LAWS, check_manifold
from .geometry import Tolerance, constraint_jacobian, normal_part
from .laws import LawViolation
from .order import excludes, fit_order, weak_order
from .problems import PROBLEMS, Potential, Problem, Reference
from .sampler import SamplerLawViolation, check_sampler
from .strategies import (
    ambient_vectors,
    batch_shapes,
    generators,
    perturbed,
    points,
    seeds,
    step_sizes,
    tangent_vectors,
)
from .symmetry import SYMMETRIES, haar_orthogonal, random_action, signed_permutation, symmetries_of

__all__ = [
    "LAWS",
    "PROBLEMS",
    "SYMMETRIES",
    "ChainDesign",
    "Chains",
    "Estimate",
    "LawViolation",
    "Potential",
    "Problem",
    "Reference",
    "SamplerLawViolation",
    "autocorrelation_time",
    "Tolerance",
    "ambient_vectors",
    "batch_shapes",
    "check_manifold",
    "check_sampler",
    "constraint_jacobian",
    "excludes",
    "fit_order",
    "generators",
    "haar_orthogonal",
    "normal_part",
    "perturbed",
    "points",
    "random_action",
    "run_chains",
    "seeds",
    "signed_permutation",
    "step_sizes",
    "symmetries_of",
    "tangent_vectors",
    "weak_order",
]
