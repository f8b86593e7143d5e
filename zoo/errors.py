"""The zoo's own error types, the exit codes of the ``zoo`` command, the check that a path can be written, and
one "did you mean" helper.

A :class:`ZooError` is a mistake the user can fix (a bad value, path, folder, checkpoint or config): the ``zoo``
command prints its message as one ``error: ...`` line and exits with its ``exit_code``, without a traceback
(``--debug`` or ``ZOO_DEBUG=1`` shows it). Exit codes, as documented in ``docs/cli.md``:

| code | meaning |
|---:|---|
| 0 | done |
| 1 | a bug: the traceback is printed, with a request to report it |
| 2 | a user mistake: bad value, path, folder, checkpoint or config |
| 3 | the run diverged (non-finite or exploding loss): no diverged epoch was kept as best |
| 4 | nothing was trained (``max_epochs`` already reached, or no training batch) |
| 5 | the machine refused a write: no space left, a file-size limit, a disk quota, no permission, a read-only file system |
| 130 | stopped by SIGINT (Ctrl+C), ``last.ckpt`` saved |
| 141 | the reader of the output stopped (``zoo models | head``) |
| 143 | stopped by SIGTERM (e.g. a scheduler's time limit), ``last.ckpt`` saved |

A machine fault (exit 5) is one line naming the path and the cause; checkpoints are written atomically, so the
earlier ``last.ckpt`` stays whole.
"""

from __future__ import annotations

import difflib
import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

EXIT_OK, EXIT_BUG, EXIT_USER, EXIT_DIVERGED, EXIT_NOTHING_TRAINED, EXIT_MACHINE_FAULT = 0, 1, 2, 3, 4, 5
EXIT_SIGINT, EXIT_SIGPIPE, EXIT_SIGTERM = 130, 141, 143  # 128 + the signal's number, as shells report it


class ZooError(Exception):
    """A mistake the user can fix; the CLI prints ``error: <message>`` and exits with ``exit_code``."""

    exit_code = EXIT_USER


class CheckpointError(ZooError, ValueError):
    """A checkpoint that cannot be used: not a torch file, truncated, unsafe to unpickle, or for another model."""


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """A checkpoint path that names no file."""


class RunDiverged(ZooError):
    """Training diverged: the loss became non-finite or exploded."""

    exit_code = EXIT_DIVERGED


class NothingTrained(ZooError):
    """A ``fit`` that took no optimizer step."""

    exit_code = EXIT_NOTHING_TRAINED


class MachineFault(ZooError):
    """The machine refused a file operation (see :data:`MACHINE_FAULTS`): the path, the cause and what to do."""

    exit_code = EXIT_MACHINE_FAULT


# errors of the machine, not of the program: errno → (the cause, what to do)
MACHINE_FAULTS = {
    errno.ENOSPC: ("no space left on the device", "free some space, or write elsewhere"),
    errno.EFBIG: (
        "file too large for the file-size limit (`ulimit -f`) or the file system",
        "raise the limit, or write elsewhere",
    ),
    errno.EDQUOT: ("disk quota exceeded", "free some of your quota, or write elsewhere"),
    errno.EACCES: ("permission denied", "use a folder you may write to, or change its permissions"),
    errno.EPERM: ("operation not permitted", "use a folder you may write to, or change its permissions"),
    errno.EROFS: ("read-only file system", "write to a writable file system"),
}


def error_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (or while handling), outermost first."""
    out = []
    while err is not None and err not in out:
        out.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return out


def machine_fault(err: BaseException) -> OSError | None:
    """The first ``OSError`` of :data:`MACHINE_FAULTS` in ``err``'s chain (torch's writer, for one, reports a
    failed write as a ``RuntimeError`` raised while handling it)."""
    return next((e for e in error_chain(err) if isinstance(e, OSError) and e.errno in MACHINE_FAULTS), None)


def fault_error(
    path: str | os.PathLike | None, fault: OSError, what: str = "", hint: str = ""
) -> MachineFault:
    """One line: ``<what> '<path>': <cause> (ERRNO); <what to do>`` (``what``: e.g. ``cannot save checkpoint``)."""
    cause, todo = MACHINE_FAULTS[fault.errno]
    where = " ".join(x for x in (what, repr(str(path)) if path else "") if x)
    return MachineFault(
        f"{where + ': ' if where else ''}{cause} ({errno.errorcode[fault.errno]}); {hint or todo}"
    )


def ensure_writable(path: str | os.PathLike, option: str | None = None, hint: str | None = None) -> Path:
    """Check, before any work, that ``path`` (a file or a folder, existing or to be made) can be written: its
    nearest existing folder takes a new file. Nothing is left behind (an unnamed temporary file is made and
    closed). Raises :class:`MachineFault` naming the folder, ``option`` and the machine's reason (permission,
    read-only file system, quota, ...), or a :class:`ZooError` when a file stands where a folder must be."""
    path = Path(path).expanduser()
    folder = path if path.is_dir() or not path.exists() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    named = f" ({option} {str(path)!r})" if option else ""
    if not folder.is_dir():
        raise ZooError(
            f"{str(folder)!r}{named} is a file, not a folder; give a folder (it is made if missing)"
        )
    try:
        tempfile.TemporaryFile(dir=folder).close()
        if path.is_file() and not os.access(path, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    except OSError as err:
        if err.errno not in MACHINE_FAULTS:
            raise
        cause, todo = MACHINE_FAULTS[err.errno]
        where = str(path if path.is_file() else folder.resolve())
        raise MachineFault(f"cannot write to {where!r}{named}: {cause}; {hint or todo}") from err
    return path


def did_you_mean(word: object, choices: Iterable[str], n: int = 3) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the ``choices`` closest to ``word`` (difflib's ratio ≥ 0.6), else ``""``.

    difflib's ``get_close_matches`` does the work; this only words the hint the same way everywhere.
    """
    close = difflib.get_close_matches(str(word), list(choices), n=n)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
