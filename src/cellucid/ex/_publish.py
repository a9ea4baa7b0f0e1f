"""Publishing an export atomically: write a hidden staging folder, then swap it in."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def check_target(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse a target that exists (unless ``overwrite``) or is not a folder."""
    if out_dir.exists() or out_dir.is_symlink():
        if not out_dir.is_dir():
            msg = f"{out_dir} exists and is not a folder."
            raise FileExistsError(msg)
        if not overwrite:
            msg = f"{out_dir} exists; pass overwrite=True (--overwrite on the command line) to replace it."
            raise FileExistsError(msg)


@contextmanager
def staged(out_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder next to ``out_dir``; on success it replaces ``out_dir``.

    On any error the staging folder is removed and ``out_dir`` is left as it was, so an
    interrupted export never leaves a half-written dataset behind.
    """
    out_dir = Path(out_dir)
    check_target(out_dir, overwrite=overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    stage = out_dir.parent / f".{out_dir.name}.staging-{token}"
    stage.mkdir()
    try:
        yield stage
        check_target(out_dir, overwrite=overwrite)  # someone may have created it meanwhile
        if out_dir.exists():
            retired = out_dir.parent / f".{out_dir.name}.old-{token}"
            os.replace(out_dir, retired)
            os.replace(stage, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(stage, out_dir)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
