"""Prefect tasks: each a few lines that call keel/ and return paths, ids and small dicts."""

import functools

from prefect.tasks import exponential_backoff

from keel.core.errors import KeelError
from keel.core.secrets import install_log_redaction, redact_exception

# Workers import the tasks: from here on no log record of this process carries a credential.
install_log_redaction()


def redacted_errors(fn):
    """Put under @task: an exception leaves the task with its credentials masked (keel.core.secrets),
    before Prefect stores its text as the run's state message and logs it. An MLflow error
    otherwise repeats the tracking URI with its password, an fsspec error the dataset URL."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            redact_exception(exc)
            raise

    run.__prefect_task_source__ = fn  # Prefect keys the task by this function's code, not the wrapper's
    return run


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retry outages, not mistakes: a KeelError (a bad file or config) fails at once."""
    try:
        state.result()
    except KeelError:
        return False
    except Exception:
        return True
    return True


# Tasks that talk to the tracking server or to storage. The MLflow client already retries a
# refused connection for about two minutes (7 tries); these retries cover longer outages: 3, 6, 12 and 24 s
# apart (±50 % jitter so that many runs do not return at once), never for a user's mistake.
REMOTE = dict(retries=4, retry_delay_seconds=exponential_backoff(backoff_factor=3), retry_jitter_factor=0.5,
              retry_condition_fn=retry_unless_user_error)
# Long tasks that resume from a checkpoint when retried.
RESUMABLE = dict(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5,
                 retry_condition_fn=retry_unless_user_error)
