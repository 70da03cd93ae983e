"""Stopping a command: SIGTERM (a scheduler cancelling it, a user's `kill`) and Ctrl-C end it
promptly and cleanly, with exit code 128 + the signal's number (143, 130).

The first signal raises in the main thread (KeyboardInterrupt for SIGINT, `Stopped` for
SIGTERM), so the running flow unwinds: its flow run and the task run the signal stopped end
Cancelled (flows.prefect_api.cancel_when_stopped; never retried: tasks.is_termination), the
training flow marks its MLflow run KILLED and keeps the last checkpoint, and the temporary
Prefect API stops.
While a flow runs Prefect's own SIGTERM handler raises first; after its clean-up it sends the
signal on to the handler here. Later signals are noted, not raised, so that the clean-up the
first one started runs to its end (SIGKILL remains for the impatient).
"""

from __future__ import annotations

import signal

from keel.core.errors import stop_signal_number

_received: list[int] = []


class Stopped(BaseException):
    """SIGTERM, raised where the main thread is (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signal = signum


def _stop(signum: int, frame) -> None:
    first = not _received
    _received.append(signum)
    if first:
        raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)


def stop_on_signals() -> None:
    """From now on SIGTERM and SIGINT stop this process as the module docstring says."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)


def stop_signal(exc: BaseException | None = None) -> int | None:
    """The signal that is stopping this process: the first one received here, else the one
    the stop in `exc`'s chain carries (keel.core.errors.stop_signal_number); None when
    nothing is stopping it."""
    return _received[0] if _received else stop_signal_number(exc)


def exit_code(signum: int) -> int:
    """The shell's code for a process ended by `signum`: 128 + its number."""
    return 128 + signum
