"""Publishing an export safely: refuse what is not ours, write a staging folder, swap it in.

Beside ``out_dir`` (in its parent folder) an export keeps hidden entries named after it:

- ``.<name>.lock``: locked (``flock``) by the one running export of ``out_dir``, holds its PID;
- ``.<name>.staging-<token>``: the export being written;
- ``.<name>.old-<token>``: the previous export, between the two renames of the swap.

The lock is released by the system when its process dies, so whoever takes it knows that
every staging or old folder of that name was left by an export that is gone: it restores
the previous export when a crash came between the renames, and removes the rest.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .._format import CATALOG_FILE, IDENTITY_FILE
from .._layout import EXPORT_FOLDER_FILES, EXPORT_TOP_FILES
from ._payload import fsync_dir

try:
    import fcntl
except ImportError:  # Windows: msvcrt locks instead
    fcntl = None

logger = logging.getLogger("cellucid")

_TOKEN = "[0-9a-f]{12}"
# errors of writing a file that name no file
_WRITE_ERRORS = frozenset(
    {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS, errno.EIO}
)
_LEFTOVER = re.compile(rf"\.(?P<name>.+)\.(?P<kind>staging|old)-{_TOKEN}")
# an internal entry (staging, retired, lock, temporary file) in a path, for messages
_INTERNAL = re.compile(rf"\.(?P<name>[^/\\]+?)\.(?:(?:staging|old|tmp)-{_TOKEN}|lock)(?=$|[^\w.-])")


def public_path(text: str) -> str:
    """Return ``text`` with every internal path beside a target named as the target itself.

    Examples
    --------
    >>> public_path("No space left: '/data/.pbmc.staging-0123456789ab/var/3.values.f32'")
    "No space left: '/data/pbmc/var/3.values.f32'"
    """
    return _INTERNAL.sub(r"\g<name>", text)


def check_target(
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool,
    input_path: str | os.PathLike[str] | None = None,
) -> None:
    """Refuse, before any work starts, a target an export must not write or replace.

    Refused: the working directory or one of its parents, a symbolic link, a mount point,
    an existing path without ``overwrite``, and with it anything but an empty folder or
    an earlier export (see :func:`_not_an_export`); ``input_path`` is the file the data
    comes from, which must not be inside. What an interrupted export left beside
    ``out_dir`` is restored or removed first; another export of ``out_dir`` running now
    is refused.
    """
    where = _absolute(out_dir)
    _check_place(where, out_dir)
    if where.parent.is_dir():
        with _locked(where, out_dir):
            _recover_locked(where)
    _check_existing(where, out_dir, overwrite=overwrite, input_path=input_path)


@contextmanager
def staged(out_dir: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a staging folder next to ``out_dir``; on success it replaces ``out_dir``.

    On any error, Ctrl-C or SIGTERM the staging folder is removed and ``out_dir`` is left
    as it was, so an interrupted export never leaves a half-written dataset behind. The
    export holds the lock of ``out_dir`` throughout, so a second export of it fails at once.
    """
    where = _absolute(out_dir)
    _check_place(where, out_dir)
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _named(e, out_dir) from e
    with _locked(where, out_dir), _sigterm_as_interrupt():
        _recover_locked(where)
        _check_existing(where, out_dir, overwrite=overwrite)
        token = uuid.uuid4().hex[:12]
        stage = where.parent / f".{where.name}.staging-{token}"
        try:
            stage.mkdir()
        except OSError as e:
            raise _named(e, out_dir) from e
        try:
            try:
                yield stage
            except OSError as e:  # name the user's folder, never the staging one
                if e.filename is not None and _INTERNAL.search(str(e.filename)):
                    raise _named(e, public_path(str(e.filename))) from e
                if e.filename is None and e.errno in _WRITE_ERRORS:  # from os.write
                    raise _named(e, out_dir) from e
                raise
            # the folder may have changed while the export ran
            _check_existing(where, out_dir, overwrite=overwrite)
            _swap(stage, where, token)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)


def recover(path: str | os.PathLike[str]) -> None:
    """Restore or remove what interrupted exports of ``path`` left, and log it.

    Readers call this first; the datasets of an exports root are recovered too. Nothing is
    done while an export of ``path`` is running, when nothing was left, or where nothing
    may be written (a read-only share).
    """
    where = _absolute(path)
    targets = [where]
    with suppress(OSError), os.scandir(where) as entries:  # the datasets of an exports root
        names = {m["name"] for e in entries if (m := _LEFTOVER.fullmatch(e.name))}
        targets += [where / name for name in sorted(names)]
    for target in targets:
        staging, old = _leftovers(target)
        if not (staging or old):
            continue
        try:
            with _locked(target, target):
                _recover_locked(target)
        except OSError as e:  # busy, or not ours to change: read what is there
            logger.debug("left %s as it is: %s", target, e)


def remove_export(out_dir: str | os.PathLike[str]) -> None:
    """Remove an earlier export, all at once: one rename, then its files.

    Refused (:class:`ValueError`) unless ``out_dir`` is an export and nothing else, by the
    rule overwrite follows; refused while an export of it runs. Renamed aside first, so a
    reader never finds it half removed, and an interruption leaves a leftover the next
    lock holder removes.
    """
    where = _absolute(out_dir)
    _check_place(where, out_dir)
    with _locked(where, out_dir):
        _recover_locked(where)
        reason = _not_an_export(where, None) if where.is_dir() else "it is not a folder"
        if reason is None and not (where / IDENTITY_FILE).is_file():
            reason = f"it has no {IDENTITY_FILE}"
        if reason is not None:
            msg = f"{out_dir} was not removed: {reason}."
            raise ValueError(msg)
        aside = where.parent / f".{where.name}.staging-{uuid.uuid4().hex[:12]}"
        os.replace(where, aside)
        shutil.rmtree(aside, ignore_errors=True)


# --- the checks ------------------------------------------------------------------------------


def _absolute(path: str | os.PathLike[str]) -> Path:
    # absolute without following links: "." gets its real name, a link stays a link
    return Path(os.path.abspath(path))


def _check_place(where: Path, shown: object) -> None:
    cwd = Path.cwd().resolve()
    real = where.resolve()
    if real == cwd or real in cwd.parents:
        msg = (
            f"Refusing to export to {shown}: it is the working directory or holds it. "
            "Give a new folder for the dataset, e.g. exports/<name>."
        )
        raise FileExistsError(msg)
    if where.is_symlink():
        msg = (
            f"Refusing to export to {shown}: it is a symbolic link (to {os.readlink(where)}); "
            "cellucid does not replace links. Export to the folder it points to, or remove the link."
        )
        raise FileExistsError(msg)


def _check_existing(
    where: Path,
    shown: object,
    *,
    overwrite: bool,
    input_path: str | os.PathLike[str] | None = None,
) -> None:
    if not os.path.lexists(where):
        return
    if not where.is_dir():
        msg = f"{shown} exists and is not a folder."
        raise FileExistsError(msg)
    if not overwrite:
        msg = (
            f"{shown} exists; pass overwrite=True (--overwrite on the command line) to replace it."
        )
        raise FileExistsError(msg)
    if os.path.ismount(where):
        msg = f"Refusing to replace {shown}: it is a mount point. Export to a new folder inside it."
        raise FileExistsError(msg)
    found = _not_an_export(where, input_path)
    if found is not None:
        msg = (
            f"Refusing to replace {shown}: {found}. overwrite replaces only a folder an earlier "
            "export wrote (or an empty one): export to a new folder, or move those files away."
        )
        raise FileExistsError(msg)


def _not_an_export(folder: Path, input_path: str | os.PathLike[str] | None) -> str | None:
    """Say what makes ``folder`` more than one earlier export (either layout); None if nothing."""
    if input_path is not None:
        source = Path(os.path.abspath(input_path)).resolve()
        real = folder.resolve()
        if source == real or real in source.parents:
            return f"it holds the input file {input_path}"
    foreign, datasets = [], []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_symlink():
                foreign.append(f"{entry.name} (a link)")
            elif entry.is_dir():
                names = EXPORT_FOLDER_FILES.get(entry.name)
                if names is not None:
                    foreign += _foreign_files(entry.path, entry.name, names)
                elif os.path.isfile(os.path.join(entry.path, IDENTITY_FILE)):
                    datasets.append(f"{entry.name}/")
                else:
                    foreign.append(f"{entry.name}/")
            elif entry.name == CATALOG_FILE:
                datasets.insert(0, CATALOG_FILE)
            elif not (entry.is_file() and EXPORT_TOP_FILES.fullmatch(entry.name)):
                foreign.append(entry.name)
    if datasets:
        return f"it is an exports root (it holds {_few(datasets)}); export each dataset to its own folder in it"
    if foreign:
        return f"it holds {_few(foreign)}, which an export does not write"
    if any(folder.iterdir()) and not (folder / IDENTITY_FILE).is_file():
        return f"it has no {IDENTITY_FILE}, so no export wrote it"
    return None


def _foreign_files(path: str, folder: str, names: re.Pattern) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(
            f"{folder}/{e.name}"
            for e in entries
            if e.is_symlink() or not e.is_file() or not names.fullmatch(e.name)
        )


def _few(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return f"{shown} and {len(names) - n} more" if len(names) > n else shown


# --- the lock, the swap and recovery ------------------------------------------------------


@contextmanager
def _locked(where: Path, shown: object) -> Iterator[None]:
    """Hold the lock of ``where`` (see the module docstring), or refuse when another export does."""
    path = where.parent / f".{where.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _named(e, shown) from e
        if not _try_lock(fd):
            os.close(fd)
            owner = ""
            with suppress(OSError, ValueError):
                owner = f" (process {int(path.read_text(encoding='ascii'))})"
            msg = f"Another export{owner} is writing {shown} now: wait for it to end, or export elsewhere."
            raise FileExistsError(msg)
        try:  # the previous owner may have removed the file as we opened it: lock the new one
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with suppress(OSError):  # while still locked, so no one locks a file about to vanish
            path.unlink()
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK, errno.EDEADLK):
            return False
        raise
    return True


def _leftovers(where: Path) -> tuple[list[Path], list[Path]]:
    """Return the staging and the retired folders beside ``where``."""
    staging, old = [], []
    with suppress(OSError), os.scandir(where.parent) as entries:
        for entry in entries:
            match = _LEFTOVER.fullmatch(entry.name)
            if match and match["name"] == where.name and entry.is_dir(follow_symlinks=False):
                (staging if match["kind"] == "staging" else old).append(Path(entry.path))
    return sorted(staging), sorted(old)


def _recover_locked(where: Path) -> None:
    """Restore the previous export an interrupted swap left aside; remove every other leftover."""
    staging, old = _leftovers(where)
    if old and not os.path.lexists(where):
        previous = max(old, key=lambda p: p.stat().st_mtime)
        os.replace(previous, where)
        old.remove(previous)
        logger.warning(
            "restored %s from %s, where an interrupted export had left it", where, previous.name
        )
    for leftover in staging + old:
        shutil.rmtree(leftover, ignore_errors=True)
        logger.warning("removed %s, left by an interrupted export of %s", leftover, where)


def _swap(stage: Path, where: Path, token: str) -> None:
    """Put ``stage`` in place of ``where``; an interruption between the renames is undone."""
    if os.path.lexists(where):
        retired = where.parent / f".{where.name}.old-{token}"
        os.replace(where, retired)
        try:
            os.replace(stage, where)
        except BaseException:
            os.replace(retired, where)
            raise
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(stage, where)
    fsync_dir(where.parent)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt in the block, so it cleans up like Ctrl-C.

    Only where Python may set handlers (the main thread) and SIGTERM still has its default.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        msg = "terminated (SIGTERM)"
        raise KeyboardInterrupt(msg)

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _named(error: OSError, path: object) -> OSError:
    """Return ``error`` (same type) about ``path``, the user's name for where it happened."""
    if error.errno is None:
        return type(error)(f"{path}: {error}")
    return type(error)(error.errno, error.strerror, str(path))
