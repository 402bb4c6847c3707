"""A stop flag that also wakes a thread blocked on a socket.

A thread that waits for NOTIFYs sits in ``select()`` on its connection, where a plain
``threading.Event`` cannot reach it: it would look at the flag only when its wait times out,
so every stop (a server shutting down, a test's server between two tests) took up to that
timeout. ``set()`` here also writes to a pipe that each waiter watches beside its socket.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class StopSignal(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._wakers: set[int] = set()  # write ends of the waiters' pipes

    def set(self) -> None:
        super().set()
        with self._lock:
            for fd in self._wakers:
                _poke(fd)

    @contextmanager
    def waker(self) -> Iterator[int]:
        """A file descriptor that becomes readable once the signal is set (at once, if it
        already is): select() on it beside the socket waited on."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        with self._lock:
            self._wakers.add(write_end)
        try:
            if self.is_set():
                _poke(write_end)
            yield read_end
        finally:
            with self._lock:
                self._wakers.discard(write_end)
            os.close(read_end)
            os.close(write_end)


def _poke(fd: int) -> None:
    # A full pipe (earlier pokes) is readable already.
    with suppress(BlockingIOError):
        os.write(fd, b"\0")
