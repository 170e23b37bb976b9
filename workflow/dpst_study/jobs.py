"""How each workflow job runs: its output and errors go to its log, a user's error ends it in one line."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import traceback
import warnings
from pathlib import Path

from dpst.train import TrainingDivergedError

# Errors a user causes (bad parameter, malformed or missing input, a run that
# diverges): the preprocess and train jobs end on them with one line naming the
# cause. dpst.io.SpaceRangerFormatError is a ValueError. A bug raising one of
# these loses only its console traceback: the job's log always keeps it.
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, FileNotFoundError, TrainingDivergedError)


@contextlib.contextmanager
def logged_to(path: str | os.PathLike, expected: tuple[type[Exception], ...] = (), context: str = ""):
    """Send stdout and stderr (progress lines and C-level output included) into the job's log.

    The log is line-buffered and a fatal signal (a segfault) writes the Python
    stack into it, so a crash keeps everything printed before. Any exception is
    written to the log with its traceback. An ``expected`` error (bad input, bad
    parameter, failed download) then ends the job with one line,
    ``ERROR: {context}{message}``, last in the log and alone on the console; any
    other exception propagates, so its traceback reaches the console too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    handler_was_on = faulthandler.is_enabled()
    message = None
    with open(path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        faulthandler.enable(log)
        try:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
                # squidpy's docstring templates warn at import; they say nothing to a user reading the log
                warnings.filterwarnings("ignore", category=SyntaxWarning, module=r"docrep")
                yield log
        except BaseException as err:
            if isinstance(err, SystemExit) and not err.code:
                raise
            traceback.print_exc(file=log)
            if not isinstance(err, expected):
                raise
            message = f"ERROR: {context}{one_line(err)}"
            print(message, file=log)
        finally:
            faulthandler.disable()
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if handler_was_on and sys.__stderr__ is not None:
                faulthandler.enable(sys.__stderr__)
    if message is not None:
        print(message, file=sys.__stderr__, flush=True)
        sys.exit(1)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type when the message is empty)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__
