"""Writing outputs atomically: temporaries beside their output (locked while in use, removed
when abandoned), atomic files and folders, writable-folder checks, disk errors in words,
folder locks, and atomic uploads to fsspec URLs."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import fsspec

from keel.core.errors import OutputError

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
    The block renames it into place; whatever is left of it afterwards is removed.

    It is created as any program creates a file (0o666) or folder (0o777) less the process's
    umask, and keeps that mode when renamed: with the usual umask 022, teammates can read a
    scoring job's predictions. A file that must stay private (ops/credentials.py) is chmod-ed
    by its writer."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(final)
    while True:
        tmp = final.parent / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with _IN_FLIGHT_LOCK:
            _IN_FLIGHT.add(str(tmp))
        try:
            if directory:
                os.mkdir(tmp, 0o777)
                descriptor = os.open(tmp, os.O_RDONLY)
            else:
                descriptor = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
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
