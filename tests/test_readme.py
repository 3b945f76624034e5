"""The README's example runs as written and leaves its weights on their manifolds."""

import pathlib

from doc_examples import run_python_blocks

import geodyn


def test_readme_example_trains_on_the_manifolds() -> None:
    namespace = run_python_blocks(pathlib.Path(__file__).parent.parent / "README.md")
    residuals = geodyn.residuals(namespace["model"])
    assert set(residuals) == {"0.weight", "2.weight"}
    assert max(residuals.values()) < 1e-5  # float32 check_point tolerance
