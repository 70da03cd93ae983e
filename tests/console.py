"""What a `keel` command prints, captured in-process: its own stdout and stderr, and what
Prefect's console handlers write (pytest's capsys/capfd would close the stream those handlers
keep between tests)."""

from __future__ import annotations

import contextlib
import io
import logging


@contextlib.contextmanager
def console():
    """(stdout, stderr) StringIOs that the command's prints and Prefect's console handlers write to."""
    from prefect.logging.handlers import PrefectConsoleHandler

    out, err = io.StringIO(), io.StringIO()
    handlers = {handler for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                if isinstance(logger, logging.Logger) for handler in logger.handlers
                if isinstance(handler, PrefectConsoleHandler)}
    saved = [(handler, handler.stream, handler.console.file) for handler in handlers]
    for handler in handlers:
        handler.setStream(err)
        handler.console.file = err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        for handler, stream, file in saved:
            handler.setStream(stream)
            handler.console.file = file
