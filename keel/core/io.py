"""Reading sources through fsspec: credentials kept out of URLs, bytes read with errors in
words, checksums, gzip, and whether a location is remote. Atomic writes are in
keel.core.atomic, listing folders in keel.core.listing."""

from __future__ import annotations

import gzip
import hashlib
import socket
import zlib
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import fsspec

from keel.core.errors import ConfigError, DatasetError
from keel.core.secrets import has_credentials, redact

# Where a URL's credentials go instead (said by refuse_credentials).
WHERE_CREDENTIALS_GO = ("pass the URL without it and put the credential in the environment (fsspec reads "
                        "FSSPEC_<PROTOCOL>_<OPTION>, e.g. FSSPEC_S3_SECRET, or FSSPEC_HTTP='{\"headers\": "
                        "{\"Authorization\": \"Basic ...\"}}'; S3, GCS and Azure read AWS_SECRET_ACCESS_KEY, "
                        "GOOGLE_APPLICATION_CREDENTIALS and AZURE_STORAGE_KEY)")


def refuse_credentials(value, what: str) -> None:
    """Raises ConfigError when `value` (a path or URL given as a run parameter) holds a
    credential: Prefect stores a flow run's parameters, and events' payloads, in its database."""
    if value is not None and has_credentials(value):
        raise ConfigError(f"{what} {redact(value)} holds a credential, which Prefect would store with the run; "
                          f"{WHERE_CREDENTIALS_GO}")


def read_bytes(url: str) -> bytes:
    """The raw bytes of a local path or fsspec URL (still compressed, as stored).

    A host that refuses the connection or whose name does not resolve is a DatasetError, as a
    missing file is: fsspec's http filesystem reports both as FileNotFoundError, so the cause
    is read from the exception chain. They count as the user's mistake, not as an outage to
    retry: a URL in a dataset config or an --input option that nothing answers is most often
    a wrong host or port, or a server nobody started, and four retries (about 50 s) would not
    change that; the message says which host refused and what to check. Messages are redacted
    (a URL may hold user:password@)."""
    with reading(url):
        with fsspec.open(url, "rb") as handle:
            return handle.read()


@contextmanager
def reading(url: str):
    """Turns the OSError of a read or listing of `url` into the DatasetError read_bytes describes."""
    try:
        yield
    except OSError as exc:
        cause = _connection_failure(exc)
        if isinstance(cause, ConnectionRefusedError):
            message = (f"{url}: connection refused by {_host_port(url)}; is the server up, and are the host and "
                       "port in the URL right?")
        elif isinstance(cause, socket.gaierror):
            message = (f"{url}: the host name {urlsplit(url).hostname} cannot be resolved ({cause.strerror}); "
                       "check the host name in the URL")
        elif isinstance(exc, FileNotFoundError):
            message = f"{url}: file not found; check the path in the dataset config"
        else:
            message = f"{url}: cannot be read ({exc})"
        raise DatasetError(redact(message)) from None


def _connection_failure(exc: BaseException) -> BaseException | None:
    """The refused connection or failed name lookup behind `exc` (aiohttp's ClientConnectorError
    and fsspec's FileNotFoundError wrap them), if there is one."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _host_port(url: str) -> str:
    """host:port of a URL (the scheme's default port when it names none), without user:password@."""
    parts = urlsplit(url)
    where = parts.netloc.rpartition("@")[2]
    try:
        named = parts.port is not None
    except ValueError:  # not a number: show it as written
        named = True
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return where if named or default is None else f"{where}:{default}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_sha256(url: str, data: bytes, expected: str | None) -> str:
    """The sha256 of `data`; raises when the config gave a different one."""
    actual = sha256_hex(data)
    if expected and actual != expected.lower():
        raise DatasetError(
            f"{url}: sha256 is {actual} but the dataset config expects {expected}; "
            "the file changed or is corrupt — restore it or update the sha256 in the config"
        )
    return actual


def decompress(url: str, data: bytes) -> bytes:
    """`data` gunzipped when it is gzip (by magic bytes, not by name); a truncated gzip is an error."""
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{url}: the gzip stream is truncated or corrupt ({exc}); copy the file again") from None


# --------------------------------------------------------------------------- fsspec locations
# Inputs and outputs may be local paths or fsspec URLs (s3://, gs://, abfs://, memory://...):
# in team mode the workers that train and score may not share a disk.


def is_remote(url: str | Path) -> bool:
    """True for an fsspec URL whose filesystem is not the local disk."""
    text = str(url)
    if "://" not in text:
        return False
    return fsspec.core.url_to_fs(text)[0].protocol not in ("file", "local", ("file", "local"))


def local_path(url: str | Path) -> Path:
    """A local path or file:// URL as a Path."""
    text = str(url)
    return Path(fsspec.core.url_to_fs(text)[1]) if text.startswith("file://") else Path(text)


def exists(url: str | Path) -> bool:
    fs, path = fsspec.core.url_to_fs(str(url))
    return fs.exists(path)
