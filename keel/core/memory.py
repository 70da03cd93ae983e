"""Giving freed memory back to the system, so that a process that streams a file of any size
is the size of a chunk, not of the file (keel.validation.incoming's first pass)."""

from __future__ import annotations

import ctypes
import functools

import pyarrow as pa


@functools.cache
def _glibc():
    """The C library, when it is glibc (mallopt, malloc_trim), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its own allocator's ways
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_freed_memory(trim: bool = False) -> None:
    """Keeps glibc giving freed memory back, so that the process's size is a chunk's, not the
    file's. By default glibc raises its mmap threshold to the largest block freed (up to 32 MB),
    after which every chunk's arrays come from the heap, which fragments and does not shrink
    (1.1 GB kept after 274,550 rows, measured): a fixed threshold of 8 MB keeps them mapped.
    `trim`: also hand back the pages freed inside the heap (malloc_trim), where the profiles'
    small arrays sit between a chunk's large ones, and those Arrow's pool keeps for reuse."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD
        if trim:
            libc.malloc_trim(0)
    if trim:
        pa.default_memory_pool().release_unused()
