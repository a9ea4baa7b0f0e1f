"""Shared fixtures (the data they build comes from ``_data``)."""

from __future__ import annotations

import anndata as ad
import pytest
from _data import make_adata


@pytest.fixture
def adata() -> ad.AnnData:
    return make_adata()


@pytest.fixture
def caplog_cellucid():
    """Collect what the ``cellucid`` logger lets through at a level (it does not propagate to caplog)."""
    import logging
    from contextlib import contextmanager

    import cellucid.logging as cl_logging

    verbosity = {logging.ERROR: 0, logging.WARNING: 1, logging.INFO: 2, logging.DEBUG: 3}

    @contextmanager
    def capture(level: int):
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append
        logger = logging.getLogger("cellucid")
        before = cl_logging._level
        cl_logging.set_verbosity(verbosity[level])
        logger.addHandler(handler)
        try:
            yield records
        finally:
            logger.removeHandler(handler)
            cl_logging._level = before

    return capture


@pytest.fixture
def _restore_logging():
    """``main()`` configures the "cellucid" logger for a terminal; undo it after the test."""
    import logging

    logger = logging.getLogger("cellucid")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]
