"""Failed writes (a full disk, a read-only or forbidden directory, a file where a directory belongs) as one
``OSError`` that names the path the user gave and the reason, whichever layer failed: Python's own ``OSError``, or
TensorStore's ``ValueError`` under Orbax, which carries the errno in its message.

The command lines print it as one line, ``error: PATH: reason`` (``message``).
"""

import contextlib
import errno
import logging
import os
import re
import sys
from pathlib import Path
from typing import Iterator

_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_LOCAL_FILE = re.compile(r'local file "([^"]+)"')
# Temporaries that become a file or directory of the same name once complete: fusionjax's staging
# (.NAME.partial-HEX, .NAME.previous-HEX, NAME.partial) and Orbax's (NAME.orbax-checkpoint-tmp[-N]).
_TEMPORARIES = (re.compile(r"^\.(?P<name>.+)\.(partial|previous)-[0-9a-f]+$"), re.compile(r"^(?P<name>.+)\.partial$"),
                re.compile(r"^(?P<name>.+)\.orbax-checkpoint-tmp(-\d+)?$"))


def user_path(filename: str | os.PathLike) -> str:
    """``filename`` as the user knows it: cut at its first temporary, named as what that temporary becomes
    (``/out/.model.onnx.partial-1a2b`` is ``/out/model.onnx``, ``ckpts/10.orbax-checkpoint-tmp/state/d/…`` is
    ``ckpts/10``)."""
    parts = Path(filename).parts
    for index, part in enumerate(parts):
        for temporary in _TEMPORARIES:
            if match := temporary.match(part):
                return str(Path(*parts[:index], match["name"]))
    return str(filename)


def as_os_error(error: BaseException, path: str | os.PathLike) -> OSError | None:
    """``error`` as an ``OSError(errno, reason, PATH)`` if it is a failed file operation, else None; PATH is the
    file it names, or ``path``."""
    if isinstance(error, OSError) and error.errno is not None:
        named = path if error.filename is None else os.fsdecode(error.filename)
        return type(error)(error.errno, error.strerror or os.strerror(error.errno), user_path(named))
    match = _OS_ERROR_CODE.search(str(error)) if type(error) is ValueError else None  # TensorStore's, not a subclass
    if match is None:
        return None
    code, local_file = int(match[1]), _LOCAL_FILE.search(str(error))
    return OSError(code, os.strerror(code), user_path(local_file[1] if local_file else path))


def message(error: OSError) -> str:
    """``PATH: reason`` for a failed file operation; the message itself for an ``OSError`` raised with one."""
    if error.errno is None or error.strerror is None:
        return str(error)
    return f"{error.filename}: {error.strerror}" if error.filename else error.strerror


def check_directory(path: str | os.PathLike) -> None:
    """Raise ``NotADirectoryError`` naming the file if ``path``, a directory to use or create, or an existing parent
    of it is a file (``mkdir`` would only say "File exists")."""
    _refuse_file(Path(path))
    check_directory_path(path)


def check_directory_path(path: str | os.PathLike) -> None:
    """Raise ``NotADirectoryError`` naming the file if an existing parent of ``path`` is a file, not a directory."""
    for parent in Path(path).parents:
        if parent.exists():
            _refuse_file(parent)
            return


def _refuse_file(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "is a file, not a directory", str(path))


def print_result(text: str) -> None:
    """Print ``text`` to standard output and flush it: a full disk under a redirected output raises ``OSError``
    naming standard output here, not a traceback at exit; a pipe its reader closed (``| head``) ends quietly."""
    try:
        print(text, flush=True)
    except OSError as error:
        # what could not be written is dropped, so that the flush at exit fails no second time
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if not isinstance(error, BrokenPipeError):  # the reader has all it wanted
            raise OSError(error.errno, error.strerror, "standard output") from error


class _OrbaxFailures(logging.Filter):
    """Drops Orbax's error records (a traceback per background thread) about a failure the caller reports."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


def _closed_loop(unraisable) -> bool:
    """TensorStore's writes still pending when Orbax gave up on a failed one report to the event loop it closed."""
    return isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed"


class _UnretrievedWriteFailures(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for the other writes of a save that failed: Orbax
    raised the first failure and left the rest to the garbage collector."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None
                    and as_os_error(record.exc_info[1], os.curdir) is not None)


def _drop_pending_write_reports() -> None:
    """From now on, print nothing for the writes left pending by a failed save (``_closed_loop``,
    ``_UnretrievedWriteFailures``): they report until they end, after the failure has been raised and reported,
    up to the interpreter's exit."""
    hook = sys.unraisablehook
    if getattr(hook, "drops_pending_write_reports", False):
        return

    def unraisable_hook(unraisable):
        if not _closed_loop(unraisable):
            hook(unraisable)

    unraisable_hook.drops_pending_write_reports = True
    sys.unraisablehook = unraisable_hook
    logging.getLogger("asyncio").addFilter(_UnretrievedWriteFailures())


@contextlib.contextmanager
def quiet_orbax_failures() -> Iterator[None]:
    """Inside, Orbax logs no error records, and TensorStore's writes left pending by a failure print no traceback
    each (then or later): the caller turns the failure Orbax raises into one line of its own."""
    quiet, logger = _OrbaxFailures(), logging.getLogger("absl")
    logger.addFilter(quiet)
    _drop_pending_write_reports()
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Inside, a failed write raises ``OSError`` naming the file as the user knows it (``user_path``; ``path`` where
    the failure names none) and the reason, once: Orbax's own log records of it are held back."""
    with quiet_orbax_failures():
        try:
            yield
        except (OSError, ValueError) as error:
            failure = as_os_error(error, path)
            if failure is None:
                raise
            raise failure from error
