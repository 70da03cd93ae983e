"""Prefect tasks: each a few lines that call keel/ and return paths, ids and small dicts."""

from keel.errors import KeelError


def retry_unless_user_error(task, task_run, state) -> bool:
    """Retry outages, not mistakes: a KeelError (a bad file or config) fails at once."""
    try:
        state.result()
    except KeelError:
        return False
    except Exception:
        return True
    return True
