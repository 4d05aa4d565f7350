"""A private event loop in a daemon thread: how the sync API (``with FakeMX()``) runs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

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


class ThreadMode:
    """``with Server(...) as server:``: ``start()`` on a private event loop in a
    background thread, for sync code; ``stop()`` there on exit, nothing left behind.

    FakeMX and DnsServer both run this way; a subclass names its thread and may
    handle exceptions its loop reports (``loop_exception_handler``).
    """

    thread_name = "fakemx"
    _thread: LoopThread | None = None

    async def start(self) -> Any:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def loop_exception_handler(self) -> ExceptionHandler | None:
        return None

    def __enter__(self) -> Self:
        thread = LoopThread(self.thread_name, self.loop_exception_handler())
        try:
            thread.run(self.start())
        except BaseException:
            thread.close()
            raise
        self._thread = thread
        return self

    def __exit__(self, *exc_info: object) -> None:
        thread, self._thread = self._thread, None
        assert thread is not None, "__exit__ without __enter__"
        try:
            thread.run(self.stop())
        finally:
            thread.close()


class LoopBridge:
    """Runs work on one event loop (a server's) from any thread or from that loop.

    Sync verbs block until done, so they must not be called on the loop itself
    (``refuse_here``); quick actions run inline there.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def here(self) -> bool:
        """Is the caller running on this loop?"""
        try:
            return self.loop is not None and asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    def refuse_here(self, verb: str, async_verb: str) -> None:
        if self.here():
            raise RuntimeError(
                f"mx.{verb}() would block the event loop fakemx runs on; "
                f"use `await mx.{async_verb}(...)` there"
            )

    def call(self, action: Callable[[], None]) -> None:
        """Run a quick, non-blocking ``action`` on the loop, from any thread."""
        if self.here():
            action()
            return

        async def run() -> None:
            action()

        asyncio.run_coroutine_threadsafe(run(), self._require()).result()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self._require()).result()

    async def arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the loop, from that loop or from another one."""
        try:
            loop = self._require()
        except RuntimeError:
            coro.close()
            raise
        if self.here():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def _require(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise RuntimeError("fakemx is not running: use `with FakeMX(...)` first")
        return self.loop
