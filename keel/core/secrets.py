"""Credentials never leave Keel in the open: one redaction for messages, logs, tags and files.

`redact(text)` masks the password of every URL (`scheme://user:***@host`), the values of
credential-looking query parameters (`?password=***`), `password=` settings, authorization
headers and secret-named keys of printed mappings, and the current values of environment
variables whose names say they hold a secret (PASSWORD, SECRET, TOKEN, AUTH, KEY, CREDENTIAL).
`install_log_redaction()` applies it to every log record created in the process, before any
handler (console, Prefect's API log handler, files) sees the record. `redact_exception(exc)`
masks an exception in place (KeelError masks its own message; tasks/ masks every exception
that leaves a task), `strip_userinfo(url)` drops a URL's `user:password@` for links, and
`keel.core.io.refuse_credentials(value, what)` stops a URL with a credential from becoming a stored run
parameter.
"""

from __future__ import annotations

import logging
import os
import re

MASK = "***"

# scheme://user:password@host  ->  scheme://user:***@host. The password runs to the last '@'
# before the path, so one written with a raw '@' (p@ss) is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@'\"\\]*:)(?P<secret>[^\s/?#'\"\\]+)(?P<tail>@)")
# Credential-looking query parameters: these names, or any name ending in one of them after a
# separator (client_secret, x-amz-security-token, sas_token, account_key).
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[\w.\-]*[_.\-])?(?:password|passwd|pwd|secret|token|access_token|api_key|apikey|key|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|credential|sv|se|sas)=)(?P<secret>[^&\s\"'\\]+)", re.IGNORECASE)
# key=value settings outside URLs (libpq connection strings, command lines): password=...
_SETTING_SECRET = re.compile(r"(?P<head>(?<![\w.\-])(?:password|passwd|pwd)\s*=\s*)(?P<secret>[^\s&;,'\"\\]+)", re.IGNORECASE)
# HTTP authorization headers as logged by clients: "Authorization: Basic dXNlcjpwdw==".
_AUTH_HEADER = re.compile(r"(?P<head>authorization['\"]?\s*[:=]\s*['\"]?(?:basic|bearer|token|digest)\s+)(?P<secret>[^\s'\",}]+)",
                          re.IGNORECASE)
# Mappings printed as text ({'password': 'x'}, "aws_secret_access_key": "x"): the value of a secret-named key.
_MAPPING_SECRET = re.compile(
    r"(?P<head>['\"][\w.\-]*(?:password|passwd|secret|token|api_?key|access_?key|credential)s?['\"]\s*:\s*['\"])"
    r"(?P<secret>[^'\"]+)(?=['\"])", re.IGNORECASE)
# Names whose values redact_data masks whole (stricter than _SECRET_NAME: "author" is no secret).
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api_?key|access_?key|credential|(^|[_.\-])(key|auth|pwd)$",
                         re.IGNORECASE)
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
    # A list of secrets (KEEL_SIGNING_KEY_PREVIOUS holds old keys, comma-separated) hides each one.
    values |= {part.strip() for value in list(values) if "," in value for part in value.split(",")
               if len(part.strip()) >= _MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def redact(text) -> str:
    """`text` (anything printable) with every credential it holds masked."""
    text = str(text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    for pattern in (_QUERY_SECRET, _SETTING_SECRET, _AUTH_HEADER, _MAPPING_SECRET):
        text = pattern.sub(lambda m: f"{m['head']}{MASK}", text)
    for value in secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


def redact_data(value):
    """A JSON-like structure (dicts, lists, strings) with every string redacted, and the string
    value of a secret-named key ("password", "api_key", "aws_secret_access_key") masked whole."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: MASK if isinstance(item, str) and item and isinstance(key, str) and _SECRET_KEY.search(key)
                else redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


def has_credentials(text) -> bool:
    """True when `text` holds something redact() would mask."""
    return redact(text) != str(text)


def strip_userinfo(url: str) -> str:
    """`url` without its `user:password@` part (and credential query values masked): for
    addresses shown to people or stored elsewhere, which authenticate on their own."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.netloc and "@" in parts.netloc:
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
    return redact(urlunsplit(parts))


def redact_exception(exc: BaseException) -> BaseException:
    """Masks credentials in `exc` itself, in place, and in the exceptions it was raised from:
    its arguments and its text attributes (MlflowException keeps its text in `.message`), so
    that str(), repr() and tracebacks of it -- which Prefect stores as a failed run's state
    message -- hold no secret. Returns `exc`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        try:
            if any(isinstance(arg, str) and has_credentials(arg) for arg in current.args):
                current.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in current.args)
            # OSError keeps filename and strerror outside __dict__.
            for name in {*vars(current), "filename", "filename2", "strerror"}:
                attribute = getattr(current, name, None)
                if isinstance(attribute, str) and has_credentials(attribute):
                    setattr(current, name, redact(attribute))
        except Exception:  # an exception type that refuses new attributes: leave it to the log redaction
            pass
        for note_index, note in enumerate(getattr(current, "__notes__", None) or []):
            if isinstance(note, str):
                current.__notes__[note_index] = redact(note)
        current = current.__cause__ or current.__context__
    return exc


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

            # In place, so that handlers that format the exception themselves (JSON, rich) see it masked.
            redact_exception(record.exc_info[1])
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
