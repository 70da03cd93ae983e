"""Reading sources through fsspec and writing outputs atomically."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import fsspec

from keel.errors import DatasetError


def read_bytes(url: str) -> bytes:
    """The raw bytes of a local path or fsspec URL (still compressed, as stored)."""
    try:
        with fsspec.open(url, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DatasetError(f"{url}: file not found; check the path in the dataset config") from None
    except OSError as exc:
        raise DatasetError(f"{url}: cannot be read ({exc})") from None


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


@contextmanager
def atomic_path(final: Path):
    """Yields a temporary path beside `final`; renamed onto it only when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: Path):
    """Yields a temporary folder beside `final`; it becomes `final` only when the block succeeds.

    If another process created `final` meanwhile, its copy wins and ours is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.rename(final, old / "x")
    os.rename(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    """The visible files in the folder `url` whose names end with `suffixes` (sorted), or None
    when `url` is not a folder."""
    fs, root = fsspec.core.url_to_fs(str(url))
    if not fs.isdir(root):
        return None
    names = sorted(p for p in fs.ls(root, detail=False)
                   if not Path(p).name.startswith(".") and p.lower().endswith(suffixes) and fs.isfile(p))
    return [fs.unstrip_protocol(p) for p in names] if is_remote(url) else names


def find_visible(fs, folder: str) -> list[str]:
    """Every file below `folder` on filesystem `fs`, sorted, skipping hidden files and folders."""
    return sorted(p for p in fs.find(folder)
                  if not any(part.startswith(".") for part in PurePosixPath(p).relative_to(folder).parts))


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
