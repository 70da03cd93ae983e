"""Errors a user can cause; each message names the file, row or column and the fix."""

import signal

from keel.core.secrets import redact


class KeelError(Exception):
    """Base of the errors Keel reports to users in one sentence. Credentials in the sentence
    (a URL's password, a token in a query) are masked when the error is made (keel.core.secrets)."""

    def __init__(self, *args):
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(KeelError):
    """A configuration file or parameter is wrong."""


class DatasetError(KeelError):
    """An input file cannot be read as the dataset its config describes."""


class DataValidationError(KeelError):
    """The data was read but failed the expectation suite; `report` holds the details."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report


class OutputError(KeelError):
    """An output cannot be written where it was asked for, or writing it would destroy or
    mislabel data (the input itself, a folder Keel did not create, a misleading extension)."""


class UntrustedModelError(KeelError):
    """A registered model version that Keel did not register, whose files differ from the
    manifest Keel recorded at registration, or whose signature does not verify: never loaded."""


def stop_exception(exc: BaseException | None) -> BaseException | None:
    """The exception by which a signal stops the process, found in `exc` or in the exceptions
    it was raised while handling: a BaseException that is not an Exception (KeyboardInterrupt
    for Ctrl-C, Prefect's TerminationSignal for SIGTERM, SystemExit). None for an ordinary error.
    E.g. a DataLoader's "worker killed by signal" error raised while a SIGTERM unwinds."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if not isinstance(exc, Exception):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def stop_signal_number(exc: BaseException | None) -> int | None:
    """The signal behind the stop in `exc`'s chain (stop_exception): SIGINT for a
    KeyboardInterrupt, else the number the stop carries in `.signal` (Prefect's
    TerminationSignal, cli.signals.Stopped); None when no signal is stopping it."""
    stop = stop_exception(exc)
    if isinstance(stop, KeyboardInterrupt):
        return signal.SIGINT
    number = getattr(stop, "signal", None)
    return number if isinstance(number, int) else None
