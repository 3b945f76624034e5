"""The examples of docs/build-your-own-optimizer.md run and their assertions hold."""

import pathlib

from doc_examples import run_python_blocks

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "build-your-own-optimizer.md"


def test_docs_examples_execute():
    run_python_blocks(DOC, min_blocks=6, isolated=True)


def test_complex_manifolds_page_executes():
    run_python_blocks(DOC.parent / "manifolds" / "complex.md")
