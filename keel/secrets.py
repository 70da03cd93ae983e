"""Credentials never leave Keel in the open: one redaction for messages, logs, tags and files.

`redact(text)` masks the password of every URL (`scheme://user:***@host`), the values of
credential-looking query parameters (`?password=***`), and the current values of environment
variables whose names say they hold a secret (PASSWORD, SECRET, TOKEN, AUTH, KEY, CREDENTIAL).
`install_log_redaction()` applies it to every log record created in the process, before any
handler (console, Prefect's API log handler, files) sees the record.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"

# scheme://user:password@host  ->  scheme://user:***@host (the password may hold anything but '@', '/' and spaces)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)(?P<secret>[^\s@/]+)(?P<tail>@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|sv|se|sas)=)(?P<secret>[^&\s\"']+)", re.IGNORECASE)
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|AUTH|CREDENTIAL|(^|_)KEY($|_)", re.IGNORECASE)
# Values shorter than this are not masked by name: too likely to match ordinary text.
_MIN_SECRET_LENGTH = 6


def secret_values() -> list[str]:
    """The values of environment variables whose names mark them as secrets, longest first."""
    values = {value for name, value in os.environ.items()
              if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH}
    # A user:password pair (Prefect's auth string, basic auth) also hides its password part.
    values |= {value.split(":", 1)[1] for value in list(values)
               if ":" in value and len(value.split(":", 1)[1]) >= _MIN_SECRET_LENGTH and "://" not in value}
    return sorted(values, key=len, reverse=True)


def redact(text) -> str:
    """`text` (anything printable) with every credential it holds masked."""
    text = str(text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['head']}{MASK}", text)
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(value):
    """A JSON-like structure (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


_installed = False


def install_log_redaction() -> None:
    """Masks credentials in every log record of this process (message, arguments and the
    exception text), whichever logger or handler it goes through. Idempotent."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return record
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
