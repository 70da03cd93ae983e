"""Prefect tasks: each a few lines that call keel/ and return typed results.

Every task is declared with `keel_task(name, retry)`: Prefect's task with Keel's retry rules
(outages are retried, a user's mistake or a stop never) and its errors' credentials masked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from prefect import task
from prefect.tasks import exponential_backoff

from keel.core.errors import KeelError, stop_exception
from keel.core.secrets import install_log_redaction, redact_exception

# Workers import the tasks: from here on no log record of this process carries a credential.
install_log_redaction()


def redacted_errors(fn):
    """An exception leaves `fn` with its credentials masked (keel.core.secrets), before Prefect
    stores its text as the run's state message and logs it. An MLflow error otherwise repeats
    the tracking URI with its password, an fsspec error the dataset URL."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            redact_exception(exc)
            raise

    run.__prefect_task_source__ = fn  # Prefect keys the task by this function's code, not the wrapper's
    return run


def is_termination(exc: BaseException | None) -> bool:
    """True for a stop (SIGTERM, Ctrl-C): the exception the signal raised, or one raised while
    it was being handled (keel.core.errors.stop_exception)."""
    return stop_exception(exc) is not None


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retry outages, not mistakes and not stops: a KeelError (a bad file or config) fails at
    once, and so does a task that a SIGTERM or Ctrl-C interrupted (`is_termination`): its retry
    would run against a Prefect API and an MLflow run that are being shut down."""
    try:
        state.result()
    except KeelError:
        return False
    except BaseException as exc:
        return not is_termination(exc)
    return True


# Tasks that talk to the tracking server or to storage. The MLflow client already retries a
# refused connection for about two minutes (7 tries); these retries cover longer outages: 3, 6, 12 and 24 s
# apart (±50 % jitter so that many runs do not return at once), never for a user's mistake.
REMOTE = dict(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=3), retry_jitter_factor=0.5,
              retry_condition_fn=retry_unless_user_error)
# Long tasks that resume from a checkpoint when retried.
RESUMABLE = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5,
                 retry_condition_fn=retry_unless_user_error)


def keel_task(name: str, retry: dict | None = None, **options) -> Callable:
    """`@keel_task("train", RESUMABLE)`: a Prefect task named `name`, retried as `retry` says
    (REMOTE, RESUMABLE; None: never), whose errors leave it with their credentials masked."""

    def declare(fn):
        return task(name=name, **(retry or {}), **options)(redacted_errors(fn))

    return declare
