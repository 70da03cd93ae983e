"""Real folders that cannot be written, and real full disks, for the output tests.

A read-only folder is a read-only tmpfs when the tests run as root (root ignores file modes)
and a folder without write permission otherwise; a full disk is a tiny tmpfs filled to the
last byte (root only: mounting needs it). Tests that cannot have one here are skipped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest


def _mount_tmpfs(folder: Path, options: str) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(folder: Path):
    """`folder`, existing and not writable by this process."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    _mount_tmpfs(folder, "ro,size=64k")
    try:
        yield folder
    finally:
        _unmount(folder)


@contextlib.contextmanager
def full_folder(folder: Path):
    """`folder` on a filesystem with no free byte left (a file `filler` takes it all)."""
    if os.geteuid() != 0:
        pytest.skip("a full filesystem needs a tmpfs mount (root)")
    folder.mkdir(parents=True)
    _mount_tmpfs(folder, "size=64k")
    try:
        descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(descriptor, b"\0" * 1024)
        except OSError:
            pass
        finally:
            os.close(descriptor)
        yield folder
    finally:
        _unmount(folder)
