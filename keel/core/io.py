"""Reading sources through fsspec and writing outputs atomically."""

from __future__ import annotations

import errno
import fcntl
import gzip
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import fsspec

from keel.core.errors import ConfigError, DatasetError, OutputError
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


# ----------------------------------------------------------------------------- temporaries
# Every temporary Keel writes beside an output is named `.{output name}.{pid}.{8 hex}.tmp` and
# holds an exclusive flock while it is in use. A writer killed with SIGKILL cannot remove its
# temporary, but the kernel drops its lock; the next writer of the same output removes such
# abandoned temporaries, and nothing else.
_IN_FLIGHT: set[str] = set()  # this process's temporaries still in use (paths)
_IN_FLIGHT_LOCK = threading.Lock()


def temporary_name_pattern(final_name: str) -> re.Pattern:
    """Exactly the names of Keel's temporaries for an output named `final_name`."""
    return re.compile(rf"\.{re.escape(final_name)}\.([0-9]+)\.[0-9a-f]{{8}}\.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: someone else's live process
        return True
    return True


def remove_abandoned_temporaries(final: Path) -> list[Path]:
    """Removes the temporaries of `final` whose writer died: named exactly as Keel names them
    for `final`, locked by nobody (a live writer anywhere on this kernel or NFS holds its
    lock), and whose pid is no live process here, or is this process's own pid without being
    one of its writes in flight (a pid reused after a container restart). Anything else,
    including a temporary whose lock cannot be tested, is left alone. Returns what it removed."""
    final = Path(final)
    pattern = temporary_name_pattern(final.name)
    prefix = f".{final.name}."
    try:
        names = [n for n in os.listdir(final.parent) if n.startswith(prefix) and pattern.fullmatch(n)]
    except OSError:
        return []
    removed = []
    for name in names:
        path = final.parent / name
        pid = int(pattern.fullmatch(name).group(1))
        with _IN_FLIGHT_LOCK:
            if str(path) in _IN_FLIGHT or (pid != os.getpid() and _pid_alive(pid)):
                continue
        try:  # files opened for writing: NFS grants exclusive locks only on those
            mode = os.O_RDONLY if os.path.isdir(path) else os.O_RDWR
            descriptor = os.open(path, mode | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or a symbolic link: not ours to follow
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path, follow_symlinks=False).st_ino != os.fstat(descriptor).st_ino:
                continue
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:  # locked by a live writer (or no locks on this filesystem): leave it
            continue
        finally:
            os.close(descriptor)
    return removed


@contextmanager
def temporary_beside(final: Path, directory: bool = False):
    """Yields a new temporary file (or folder) beside `final`, named for `final` and this
    process and locked while the block runs, after removing `final`'s abandoned temporaries.
    The block renames it into place; whatever is left of it afterwards is removed."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(final)
    while True:
        tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.add(str(tmp))
        try:
            if directory:
                os.mkdir(tmp, 0o700)
                descriptor = os.open(tmp, os.O_RDONLY)
            else:
                descriptor = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(str(tmp))
        except BaseException:
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(str(tmp))
            raise
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # a filesystem without locks: then nobody can take this temporary for abandoned
        yield tmp
    finally:
        try:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        finally:
            os.close(descriptor)
            with _IN_FLIGHT_LOCK:
                _IN_FLIGHT.discard(str(tmp))


@contextmanager
def atomic_path(final: Path):
    """Yields a temporary path beside `final`; renamed onto it only when the block succeeds."""
    final = Path(final)
    with temporary_beside(final) as tmp:
        yield tmp
        os.replace(tmp, final)


@contextmanager
def atomic_dir(final: Path):
    """Yields a temporary folder beside `final`; it becomes `final` only when the block succeeds.

    If another process created `final` meanwhile, its copy wins and ours is discarded.
    """
    final = Path(final)
    with temporary_beside(final, directory=True) as tmp:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise


def ensure_writable_folder(folder: Path, fix: str) -> None:
    """Creates `folder` if needed and checks that a file can be created in it (a temporary
    file, removed at once); raises OutputError naming the folder and `fix` (what the user can
    do, e.g. "choose an --output in a folder you can write to") when it cannot."""
    folder = Path(folder)
    _refuse_missing_drive(folder, fix)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: is a file, not a folder; {fix}") from None
    except OSError as exc:
        raise OutputError(f"{folder}: the folder cannot be created ({exc.strerror}); {fix}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: the folder cannot be written to ({exc.strerror}); {fix}") from None


# Folders whose sub-folders are drives (mount points): a missing one is an unplugged or
# unmounted drive, and creating it would write to the system disk instead.
_MOUNT_ROOTS = ("/", "/mnt", "/media", "/run/media", "/Volumes")


def _refuse_missing_drive(folder: Path, fix: str) -> None:
    """Raises OutputError when creating `folder` would mean creating a drive's mount point:
    its nearest existing ancestor is `/`, /mnt, /media, /run/media/<user> or /Volumes."""
    folder = Path(os.path.abspath(folder))
    if folder.exists():
        return
    missing = folder
    while not missing.parent.exists():
        missing = missing.parent
    parent = missing.parent
    if str(parent) in _MOUNT_ROOTS or str(parent.parent) == "/run/media":
        raise OutputError(f"{missing}: does not exist, and Keel does not create a folder directly under {parent} "
                          f"(is the drive mounted?); mount it, or {fix}")


# Errors of the disk, not of Keel: retrying the job would not help, so they become OutputError.
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


@contextmanager
def writing_into(folder: Path | str, fix: str):
    """Turns a full disk (ENOSPC, EDQUOT, EFBIG) or a folder that refuses writes (EROFS,
    EACCES, EPERM) while the block writes into `folder` into an OutputError naming it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise OutputError(f"{folder}: the disk is full ({os.strerror(exc.errno)}); {fix}") from None
        if exc.errno in _NOT_WRITABLE:
            raise OutputError(f"{folder}: the folder cannot be written to ({os.strerror(exc.errno)}); {fix}") from None
        raise


@contextmanager
def folder_lock(folder: Path):
    """An exclusive advisory lock on a folder (flock on its descriptor), for one job's writes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def replace_dir(staged: Path, final: Path) -> None:
    """Puts the folder `staged` in place of `final` (which may exist): two renames, never half of each."""
    final = Path(final)
    if not final.exists():
        os.rename(staged, final)
        return
    with temporary_beside(final, directory=True) as old:  # removed afterwards, or by the next writer if we die
        os.rename(final, old / "x")
        os.rename(staged, final)


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


def list_files(url: str | Path, suffixes: tuple[str, ...]) -> list[str] | None:
    """The visible files (see `is_hidden`) in the folder `url` whose names end with `suffixes`
    (sorted), or None when `url` is not a folder."""
    fs, root = fsspec.core.url_to_fs(str(url))
    with reading(str(url)):
        if not fs.isdir(root):
            return None
        names = sorted(p for p in fs.ls(root, detail=False)
                       if not is_hidden(PurePosixPath(p).name) and p.lower().endswith(suffixes) and fs.isfile(p))
    return [fs.unstrip_protocol(p) for p in names] if is_remote(url) else names


# Names that tools leave beside photos (macOS Finder, Windows Explorer); skipped like dotfiles.
JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
LINK_OUTSIDE = "link points outside the dataset"
FOLDER_LINK = "folder is a symbolic link; Keel does not follow folder links"


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is skipped when listing inputs.

    Hidden are: names starting with "." (".cache", ".partial.csv", ".jpg"), except a name whose
    part before the extension is only dots ("...jpg", "..png": odd but legal photo names,
    listed); always Keel's own temporaries (".*.tmp") and AppleDouble files ("._*"); and the
    junk tools leave beside photos (.DS_Store, Thumbs.db, ehthumbs.db, desktop.ini), whatever
    their case. Everything else is listed, and a file that is not a photo is then quarantined
    with its reason, not skipped.
    """
    lowered = name.lower()
    if lowered in JUNK_NAMES or lowered.startswith("._") or (lowered.startswith(".") and lowered.endswith(".tmp")):
        return True
    if not name.startswith("."):
        return False
    path = PurePosixPath(name)
    return not (path.suffix and set(path.stem) == {"."})


@dataclass
class Listing:
    """What listing a folder found: files to read, entries refused with a reason (path ->
    reason), hidden names skipped, and (one level only) the subfolders."""

    files: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def list_folder(fs, folder: str, root: str | None = None) -> Listing:
    """One level of `folder` on filesystem `fs` (local or fsspec), sorted by name.

    Hidden names (`is_hidden`) are skipped and reported. Symbolic links (local disks only)
    are never followed out of `root` (default `folder`): a link whose target lies outside
    `root` is refused ("link points outside the dataset") and so is a link to a folder, even
    one inside `root` (no cycles, no photo listed twice through two paths). A link to a file
    inside `root` is listed like the file itself (its content makes it a duplicate of its
    target). Broken links, unreadable folders and devices, pipes or sockets are refused too.
    """
    folder = folder.rstrip("/") or "/"
    listing = Listing()
    try:
        entries = sorted(fs.ls(folder, detail=True), key=lambda e: e["name"])
    except PermissionError:
        listing.quarantined[folder] = "folder cannot be read (permission denied)"
        return listing
    real_root = os.path.realpath(root if root is not None else folder) if _is_local(fs) else None
    for entry in entries:
        path = entry["name"].rstrip("/")
        if path == folder:
            continue
        if is_hidden(PurePosixPath(path).name):
            listing.hidden.append(path)
        elif entry.get("islink"):
            target = os.path.realpath(path)
            if os.path.isdir(target):
                listing.quarantined[path] = FOLDER_LINK + ("" if _inside(target, real_root) else
                                                           " (it points outside the dataset)")
            elif not _inside(target, real_root):
                listing.quarantined[path] = LINK_OUTSIDE
            elif not os.path.exists(target):
                listing.quarantined[path] = "broken link: its target does not exist"
            elif not os.path.isfile(target):
                listing.quarantined[path] = "link to something that is not a regular file (a device, pipe or socket)"
            else:
                listing.files.append(path)
        elif entry["type"] == "directory":
            listing.folders.append(path)
        elif entry["type"] == "file":
            listing.files.append(path)
        else:
            listing.quarantined[path] = "not a regular file (a device, pipe or socket)"
    return listing


def find_visible(fs, folder: str, root: str | None = None) -> Listing:
    """Every file below `folder` on filesystem `fs`, by the rules of `list_folder` applied at
    every level (hidden folders are skipped whole); `files` sorted by path. The one listing
    of photos: image-folder ingest and `keel predict` on a folder of photos both use it."""
    folder = folder.rstrip("/") or "/"
    root = folder if root is None else root
    found = Listing()
    pending = [folder]
    while pending:
        level = list_folder(fs, pending.pop(), root)
        found.files += level.files
        found.quarantined.update(level.quarantined)
        found.hidden += level.hidden
        pending += level.folders
    found.files.sort()
    found.hidden.sort()
    found.quarantined = dict(sorted(found.quarantined.items()))
    return found


def _is_local(fs) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def exists(url: str | Path) -> bool:
    fs, path = fsspec.core.url_to_fs(str(url))
    return fs.exists(path)


def put_atomic(local: Path, url: str) -> None:
    """Uploads a finished local file to `url`: first beside it under a temporary name, then
    moved onto it, so readers never see half a file."""
    fs, path = fsspec.core.url_to_fs(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.{os.getpid()}.tmp"
    try:
        fs.put_file(str(local), tmp)
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
