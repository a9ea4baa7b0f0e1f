"""Sphinx configuration of the cellucid documentation.

Build (warnings are errors)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

or ``bash docs/build.sh``. Environment variables:

``CELLUCID_DOCS_INTERSPHINX``
    ``1`` fetches the intersphinx inventories (needs the internet), ``0`` builds without
    them. Default: ``1`` on Read the Docs, ``0`` everywhere else.
``CELLUCID_DOCS_NB_EXECUTION``
    myst-nb's ``nb_execution_mode``: ``force`` (default, every notebook runs on every
    build), ``cache`` (re-run only notebooks whose code changed; faster while writing
    docs, but outputs go stale when the package changes) or ``off``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from datetime import UTC, datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "extensions"))

# sphinx-autodoc-typehints calls a Sphinx API deprecated in Sphinx 9 (a Python warning,
# not a Sphinx one: it does not fail the build, it only clutters the log)
warnings.filterwarnings(
    "ignore", message=r".*_RstSnippetParser\.set_application.*", module="sphinx_autodoc_typehints"
)

# The notebooks' kernels inherit this: no progress bar (cellucid's, scanpy's) in the built
# pages, which would only show a frozen bar or a widget without its state.
os.environ.setdefault("TQDM_DISABLE", "1")

# -- project -----------------------------------------------------------------------------

_meta = metadata("cellucid")
project = _meta["Name"]
author = "The cellucid developers"
copyright = f"{datetime.now(tz=UTC):%Y}, {author}"
release = version = _meta["Version"]

# -- general -----------------------------------------------------------------------------

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # before sphinx_autodoc_typehints, which reads its output
    "sphinx_autodoc_typehints",
    "sphinx.ext.intersphinx",
    "sphinx_copybutton",
    "typed_returns",  # docs/extensions: numpydoc "Returns" sections without a type line
    "cli_help",  # docs/extensions: the ``cli-help`` directive runs ``cellucid --help``
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "jupyter_execute", "scripts", "extensions", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"
default_role = "literal"
pygments_style = "default"

# Every cross-reference must resolve: a typo in :func:`...` or a type hint pointing at a
# private class fails the build. See `nitpick_ignore_regex` below for external types.
nitpicky = True

# -- autodoc / autosummary / napoleon / typehints ------------------------------------------

autosummary_generate = True  # stubs go to docs/generated/ (git-ignored)
autosummary_imported_members = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "description"  # sphinx_autodoc_typehints moves them into the fields
# numpy's ArrayLike is a huge Union of private protocols; show its public name instead
autodoc_type_aliases = {"ArrayLike": "numpy.typing.ArrayLike"}

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True

typehints_defaults = "comma"
typehints_document_rtype = True
typehints_use_signature = False
always_use_bars_union = True

# -- intersphinx -------------------------------------------------------------------------
# The inventories (objects.inv) of these projects make type hints such as AnnData or
# numpy.ndarray links. They are downloaded at build time, and this machine (and CI) has no
# internet, so they are only fetched when CELLUCID_DOCS_INTERSPHINX=1 (the default on Read
# the Docs, which sets READTHEDOCS). Offline, the mapping is kept empty: Sphinx then tries
# no download and emits no "failed to reach any of the inventories" warning (which -W
# would turn into an error); no inventory is shipped in the repository.
INTERSPHINX_MAPPING = {
    "python": ("https://docs.python.org/3", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
}
_intersphinx_default = "1" if os.environ.get("READTHEDOCS") else "0"
intersphinx_online = os.environ.get("CELLUCID_DOCS_INTERSPHINX", _intersphinx_default) == "1"
intersphinx_mapping = INTERSPHINX_MAPPING if intersphinx_online else {}
intersphinx_timeout = 10

# Types of other projects cannot be resolved without their inventories, and a few cannot
# be resolved even with them (numpy's ArrayLike is documented as data, not a class). These
# patterns ignore exactly those: the standard library, numpy, scipy, pandas, anndata and
# matplotlib. Anything of cellucid's own (cellucid.*) is never ignored, so a broken
# internal reference still fails the build. Online, everything an inventory holds is
# linked as usual; an ignore only applies to a reference that stayed unresolved.
_EXTERNAL = (
    r"(?:str|int|float|bool|bytes|complex|object|dict|list|tuple|set|frozenset|type|None"
    r"|Ellipsis|NoneType"
    r"|(?:pathlib|os|collections\.abc|typing|types|logging|datetime|json)(?:\.[\w.]+)?"
    r"|(?:anndata|ad|scanpy|sc|numpy|np|scipy|pandas|pd|matplotlib)(?:\.[\w.]+)?"
    r"|AnnData|ArrayLike|Path|PathLike|Sequence|Iterator|Mapping|Literal|Any)"
)
nitpick_ignore_regex = [
    (r"py:(?:class|data|obj|exc|func|meth|attr|mod)", _EXTERNAL),
]

# -- myst / myst-nb ----------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

nb_execution_mode = os.environ.get("CELLUCID_DOCS_NB_EXECUTION", "force")
# The show tutorial starts a local server from its kernel (which inherits this environment):
# the build never downloads the viewer, and keeps show()'s exports out of the user's cache.
os.environ.setdefault("CELLUCID_OFFLINE", "1")
os.environ.setdefault("CELLUCID_CACHE_DIR", tempfile.mkdtemp(prefix="cellucid-docs-"))
nb_execution_timeout = 300  # seconds per cell; the slowest (a 3D UMAP) takes ~20 s
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "show"

# -- html --------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = "cellucid"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "repository_url": "https://github.com/cellucid/cellucid",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_issues_button": True,
    "use_edit_page_button": True,
    "use_download_button": True,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_context = {"default_mode": "light"}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


# -- hooks -------------------------------------------------------------------------------


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):
    """Leave out the "Alias for field number N" attributes of NamedTuples.

    The result types' own docstrings describe their fields, which the signature lists.
    """
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_aliases)
