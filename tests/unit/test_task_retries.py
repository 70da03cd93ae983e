"""Keel's retry rule for Prefect tasks: outages are retried; a user's mistake and a stop never."""

from __future__ import annotations

import pytest

from keel.core.errors import ConfigError
from tasks import is_termination, retry_unless_user_error


class Failed:
    """What Prefect's retry condition sees: the task's failed state, whose result raises."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def result(self):
        raise self.exc


def raised_while_stopping(stop: BaseException) -> RuntimeError:
    """The error a DataLoader reports when the same SIGTERM killed its worker process."""
    try:
        try:
            raise stop
        except BaseException:
            raise RuntimeError("DataLoader worker (pid 4711) is killed by signal: Terminated.")
    except RuntimeError as exc:
        return exc


def test_an_outage_is_retried_and_a_mistake_is_not():
    assert retry_unless_user_error(None, None, Failed(ConnectionError("refused"))) is True
    assert retry_unless_user_error(None, None, Failed(ConfigError("no such model"))) is False


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(143)], ids=["Ctrl-C", "exit"])
def test_an_error_raised_while_the_process_stops_is_never_retried(stop):
    from prefect.exceptions import TerminationSignal

    for signal_exception in (stop, TerminationSignal(signal=15)):
        error = raised_while_stopping(signal_exception)
        assert is_termination(error) and is_termination(signal_exception)
        assert retry_unless_user_error(None, None, Failed(error)) is False
        assert retry_unless_user_error(None, None, Failed(signal_exception)) is False
    assert not is_termination(RuntimeError("a worker crashed on its own"))


def test_keel_task_names_the_task_sets_its_retries_and_masks_credentials_in_its_errors():
    from tasks import REMOTE, keel_task

    @keel_task("demo", REMOTE)
    def demo(url: str) -> None:
        raise RuntimeError(f"cannot reach {url}")

    assert demo.name == "demo" and demo.retries == 4 and demo.retry_condition_fn is retry_unless_user_error
    assert keel_task("once")(lambda: None).retries == 0
    with pytest.raises(RuntimeError) as caught:
        demo.fn("https://reader:s3cr3t-pw@example.org/rows.csv")  # the function Prefect runs
    assert "s3cr3t-pw" not in str(caught.value) and "example.org/rows.csv" in str(caught.value)
