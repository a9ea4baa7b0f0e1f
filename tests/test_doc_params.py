"""The shared docstring sections of the AnnData-level ``cl.pp`` functions (``cellucid._docs``)."""

from __future__ import annotations

import inspect
import re

import pytest

import cellucid as cl
from cellucid._docs import doc_adata, doc_copy, doc_params, doc_returns_copy

WRAPPERS = [
    cl.pp.encode_categories,
    cl.pp.centroids,
    cl.pp.normalize_embedding,
    cl.pp.outlier_quantiles_obs,
    cl.pp.quantize_obs,
]


def _section(doc: str, title: str) -> list[str]:
    lines = doc.splitlines()
    start = lines.index(title) + 2  # the title and its underline
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


@pytest.mark.parametrize("func", WRAPPERS, ids=lambda f: f.__name__)
def test_wrapper_docstring_documents_its_signature(func) -> None:
    doc = func.__doc__
    assert not re.search(r"^\s*\{\w+\}\s*$", doc, re.MULTILINE)  # every placeholder filled
    names = [line for line in _section(doc, "Parameters") if not line.startswith(" ")]
    assert names == list(inspect.signature(func).parameters)
    for shared in (doc_adata, doc_copy, doc_returns_copy):
        assert shared in doc


def test_doc_params_fills_placeholder_lines_only() -> None:
    @doc_params(adata=doc_adata)
    def f(adata, key_added=None):
        """Do it.

        Parameters
        ----------
        {adata}
        key_added
            Defaults to ``f"{adata}_x"``.
        """

    assert f.__doc__ == (
        "Do it.\n\nParameters\n----------\nadata\n    Annotated data matrix.\n"
        'key_added\n    Defaults to ``f"{adata}_x"``.'
    )


def test_doc_params_refuses_a_missing_placeholder() -> None:
    def f(adata):
        """Do it."""

    with pytest.raises(ValueError, match=r"has no \{copy\} line"):
        doc_params(copy=doc_copy)(f)
