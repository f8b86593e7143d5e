"""The zoo's own error type, the exit codes of the ``zoo`` command, and one "did you mean" helper.

A :class:`ZooError` is a mistake the user can fix (a bad value, path, folder, checkpoint or config): the ``zoo``
command prints its message as one ``error: ...`` line and exits with its ``exit_code``, without a traceback
(``--debug`` or ``ZOO_DEBUG=1`` shows it). Exit codes, as documented in ``docs/cli.md``:

| code | meaning |
|---:|---|
| 0 | done |
| 1 | a bug: the traceback is printed, with a request to report it |
| 2 | a user mistake: bad value, path, folder, checkpoint, permission or config |
| 3 | the run diverged (non-finite or exploding loss): no diverged epoch was kept as best |
| 4 | nothing was trained (``max_epochs`` already reached, or no training batch) |
| 130 | stopped by SIGINT (Ctrl+C), ``last.ckpt`` saved |
| 143 | stopped by SIGTERM (e.g. a scheduler's time limit), ``last.ckpt`` saved |
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_OK, EXIT_BUG, EXIT_USER, EXIT_DIVERGED, EXIT_NOTHING_TRAINED = 0, 1, 2, 3, 4
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


def did_you_mean(word: object, choices: Iterable[str], n: int = 3) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the ``choices`` closest to ``word`` (difflib's ratio ≥ 0.6), else ``""``.

    difflib's ``get_close_matches`` does the work; this only words the hint the same way everywhere.
    """
    close = difflib.get_close_matches(str(word), list(choices), n=n)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
