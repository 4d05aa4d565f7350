"""A private event loop in a daemon thread: how the sync API (``with FakeMX()``) runs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class LoopThread:
    def __init__(self, name: str, exception_handler: ExceptionHandler | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        if exception_handler is not None:
            self.loop.set_exception_handler(exception_handler)  # our own loop: ours to watch
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Cancel what is left (e.g. a TLS handshake a client abandoned), stop, join, close.

        Without the cancelling, asyncio would warn "Task was destroyed but it is
        pending" for every task still waiting when the loop closes.
        """
        with contextlib.suppress(Exception):
            self.run(_cancel_others(timeout_seconds=2.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _cancel_others(timeout_seconds: float) -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout_seconds)


def start_in_thread(
    name: str,
    start: Callable[[], Coroutine[Any, Any, object]],
    exception_handler: ExceptionHandler | None = None,
) -> LoopThread:
    """A new LoopThread with ``start()`` run on it; nothing left behind if it fails."""
    thread = LoopThread(name, exception_handler)
    try:
        thread.run(start())
    except BaseException:
        thread.close()
        raise
    return thread


def stop_thread(thread: LoopThread | None, stop: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run ``stop()`` on the thread's loop, then close the thread, whatever happens."""
    assert thread is not None, "__exit__ without __enter__"
    try:
        thread.run(stop())
    finally:
        thread.close()
