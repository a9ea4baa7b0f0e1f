"""Render numpydoc "Returns" sections the way cellucid writes them.

napoleon reads the first line of a numpydoc "Returns" section as the return *type*. Our
docstrings mostly describe the return value in prose ("The path of the written dataset
folder.") and leave the type to the annotation, which sphinx-autodoc-typehints renders as
``:rtype:``. Left to napoleon, the prose would become an (unresolvable) type reference.

This extension (adapted from scanpy's and the scverse cookiecutter's ``typed_returns``)
turns the section into one ``:returns:`` field:

* prose stays prose;
* ``name : type`` lines become ``name`` (:class:`type`) items;
* a first line that is only a type name followed by an indented description (classic
  numpydoc) keeps the description; the type comes from the annotation.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sphinx.ext.napoleon import NumpyDocstring

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from sphinx.application import Sphinx

_NAME_TYPE = re.compile(r"(?P<param>\w+)\s+:\s+(?P<type>[\w.]+)")
_BARE_TYPE = re.compile(r"[\w.]+")


def _process_return(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if m := _NAME_TYPE.fullmatch(line):
            yield f"- {m['param']} (:class:`~{m['type']}`)"
        else:
            yield line


def _parse_returns_section(self: NumpyDocstring, section: str) -> list[str]:
    lines = self._dedent(self._consume_to_next_section())
    if lines and lines[0] == ":":  # sphinx-autodoc-typehints' "no type line here" marker
        del lines[0]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) > 1 and _BARE_TYPE.fullmatch(lines[0]) and lines[1].startswith((" ", "\t")):
        lines = self._dedent(lines[1:])
    out = self._format_block(":returns: ", list(_process_return(lines)))
    if out and out[-1]:
        out.append("")
    return out


def setup(app: Sphinx) -> dict[str, bool]:
    NumpyDocstring._parse_returns_section = _parse_returns_section
    return {"parallel_read_safe": True, "parallel_write_safe": True}
