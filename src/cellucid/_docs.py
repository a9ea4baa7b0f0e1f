"""Docstring sections shared by the AnnData-level functions, filled in by :func:`doc_params`.

As scanpy does: a docstring names a shared section by a placeholder on a line of its own
(``{adata}``), and :func:`doc_params` replaces it with the text here. The texts are flush
left; a placeholder's indentation is given to every line of its text.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

doc_adata = """\
adata
    Annotated data matrix."""

doc_groupby = """\
groupby
    A categorical (or category-like) column of ``adata.obs``."""

doc_basis = """\
basis
    The embedding in ``adata.obsm``: its key, or its basis as scanpy's plotting
    takes it (``"umap"`` reads ``obsm["X_umap"]``)."""

doc_copy = """\
copy
    Return a modified copy instead of changing ``adata``."""

doc_returns_copy = """\
Returns
-------
The copy when ``copy=True``, else None."""


def doc_params(**sections: str) -> Callable[[F], F]:
    """Replace each line ``{name}`` of a function's docstring with the section ``name``.

    Only placeholder lines are replaced, so braces in the text (``f"{groupby}_codes"``)
    stay as they are; a name the docstring has no line for is an error, not a silently
    missing section.
    """

    def decorate(func: F) -> F:
        doc = inspect.cleandoc(func.__doc__ or "")
        for name, text in sections.items():
            line = re.compile(r"^([ ]*)\{" + re.escape(name) + r"\}[ ]*$", re.MULTILINE)
            if not line.search(doc):
                msg = f"{func.__qualname__}'s docstring has no {{{name}}} line."
                raise ValueError(msg)
            doc = line.sub(lambda m, text=text: textwrap.indent(text, m[1]), doc)
        func.__doc__ = doc
        return func

    return decorate
