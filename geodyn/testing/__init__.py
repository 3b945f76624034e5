"""The law suite every geodyn manifold obeys, and hypothesis strategies to drive it.

```python
geodyn.testing.check_manifold(geodyn.manifolds.Sphere(), shape=(4, 3))
```
runs every law with hypothesis and returns a report of the worst numbers seen.
Requires ``hypothesis``.
"""

from .check import LAWS, check_manifold
from .geometry import Tolerance, constraint_jacobian, normal_part
from .laws import LawViolation
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
    "SYMMETRIES",
    "LawViolation",
    "Tolerance",
    "ambient_vectors",
    "batch_shapes",
    "check_manifold",
    "constraint_jacobian",
    "generators",
    "haar_orthogonal",
    "normal_part",
    "perturbed",
    "points",
    "random_action",
    "seeds",
    "signed_permutation",
    "step_sizes",
    "symmetries_of",
    "tangent_vectors",
]
