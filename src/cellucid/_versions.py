"""The version report behind :func:`cellucid.logging.print_versions`.

session-info lists the modules in its caller's globals first, so the packages that matter
for a bug report are imported here, at module level.
"""

import warnings

import anndata
import h5py
import numpy
import pandas
import scanpy
import scipy
import session_info

import cellucid

__all__ = ["anndata", "cellucid", "h5py", "numpy", "pandas", "scanpy", "scipy", "show"]


def show() -> None:
    """Print the versions of cellucid, its dependencies, Python and the OS."""
    with warnings.catch_warnings():
        # session-info reads module.__version__, which some packages deprecate
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        session_info.show(html=False, dependencies=True, write_req_file=False)
