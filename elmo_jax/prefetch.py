"""A background thread running an iterator a few items ahead of its consumer (host work off the
train step's critical path), re-raising the producer's exceptions in the consumer."""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Generic, Iterable, Iterator, TypeVar

T_co = TypeVar("T_co")

_ITEM, _END, _ERROR = 0, 1, 2


def _produce(source: Iterator[Any], out: queue.Queue, stop: threading.Event) -> None:
    """Prefetch thread body: items, then an end or error message; gives up once `stop` is set."""

    def put(message: tuple[int, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(message, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in source:
            if not put((_ITEM, item)):
                return
        put((_END, None))
    except BaseException as e:  # noqa: BLE001 - handed to the consumer
        put((_ERROR, e))


class Prefetcher(Generic[T_co]):
    """Runs an iterator in a daemon thread, `depth` items ahead of the consumer.

    Exceptions of the producer are re-raised in the consumer at the position they occurred;
    `close()` (or leaving a `with` block) stops the thread."""

    def __init__(self, iterator: Iterable[T_co], depth: int = 4):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        # the thread gets no reference to `self`, so dropping an unclosed Prefetcher stops it (__del__)
        self._thread = threading.Thread(target=_produce, args=(iter(iterator), self._queue, self._stop),
                                        name="elmo-jax-prefetch", daemon=True)
        self._thread.start()

    def __iter__(self) -> "Prefetcher[T_co]":
        return self

    def __next__(self) -> T_co:
        if self._done:
            raise StopIteration
        while True:
            try:
                kind, value = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive() and self._queue.empty():
                    self._done = True
                    raise StopIteration
        if kind == _ITEM:
            return value
        self._done = True
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop the producer thread (waits briefly for it) and drop prefetched items."""
        self._stop.set()
        self._done = True
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def __enter__(self) -> "Prefetcher[T_co]":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop.set()


def prefetch(iterator: Iterable[T_co], depth: int = 4) -> Prefetcher[T_co]:
    """Run `iterator` in a background thread, `depth` items ahead (see `Prefetcher`)."""
    return Prefetcher(iterator, depth)
