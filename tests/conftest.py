"""Shared fixtures (the data they build comes from ``_data``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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


#: botocore looks for no credentials, region or metadata server beyond what tests give it
AWS_ISOLATION = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture
def aws_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in AWS_ISOLATION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """An S3 server (moto's) on 127.0.0.1 at an OS-chosen port, for a module's tests."""
    import logging

    moto_server = pytest.importorskip("moto.server", reason="the test group installs moto[server]")
    pytest.importorskip("s3fs", reason="the test group installs s3fs")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, aws_isolated: None) -> tuple[str, dict]:
    """A fresh bucket: its URL and the storage_options that reach it."""
    import s3fs

    options = {"key": "testing", "secret": "testing", "endpoint_url": s3_endpoint}
    bucket = f"b{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return f"s3://{bucket}", options
