"""Errors the user fixes, as opposed to bugs: the command lines print them as ``error: …`` and exit with status 1,
without a traceback; any other exception keeps its traceback. Faults the trainer repairs itself it reports with
``warn``."""

import sys


def warn(message: str) -> None:
    """``warning: …`` on stderr: what the trainer found wrong in a workdir, and what it did about it."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


class UserError(Exception):
    """Base of the errors that a config, a flag, the data or the workdir causes; the message says the fix."""


class ConfigError(UserError, ValueError):
    """A config field or command-line flag asks for something the trainer cannot do."""


class DataNotFoundError(UserError, FileNotFoundError):
    """The data set is neither prepared in ``config.data_dir`` nor preparable offline from ``config.manual_dir``."""


class DataError(UserError, ValueError):
    """Files the user provided are unusable: a corrupt or incomplete archive in ``config.manual_dir``, a converted
    checkpoint whose variables do not fit the architecture it names."""


class WorkdirConflictError(UserError, RuntimeError):
    """The workdir holds another run; it is left untouched."""


class WorkdirInUseError(WorkdirConflictError):
    """A live process holds the workdir's lock: two runs never share a workdir."""


class CheckpointError(UserError, ValueError):
    """A saved checkpoint cannot be used: its files are unreadable (truncated, half deleted) or it holds NaN/Inf."""


class RunNotFoundError(UserError, FileNotFoundError):
    """Where a command line looked there is no run, or not the part of it asked for (a checkpoint, the metrics)."""


class TrainingDivergedError(UserError, RuntimeError):
    """The training loss or a value of the train state became NaN or Inf; nothing after the last good checkpoint
    was saved."""
