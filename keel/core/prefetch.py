"""An iterator's items made one ahead in a thread: reading and parsing the next batch of a file
(zlib, Arrow and numpy release the GIL) while the caller scores, checks or writes this one."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator


def prefetched(items: Iterator) -> Iterator:
    """`items` made one ahead in a thread of their own: the next chunk is read and parsed (zlib,
    Arrow and numpy release the GIL) while the caller scores or writes this one, and no further:
    two chunks in memory at most. An error there is raised here; leaving early stops the thread
    and closes `items`."""
    results: queue.Queue = queue.Queue()
    turns = threading.Semaphore(2)  # the item the caller holds and the one being made
    stop, end = threading.Event(), object()

    def produce() -> None:
        try:
            while True:
                while not turns.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                item = end if stop.is_set() else next(items, end)
                results.put((item, None))
                if item is end:
                    return
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller, raised there
            results.put((end, exc))
        finally:
            getattr(items, "close", lambda: None)()

    thread = threading.Thread(target=produce, name="keel-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = results.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
            del item
            turns.release()  # the caller is done with the item: make the one after next
    finally:
        stop.set()
        thread.join()
