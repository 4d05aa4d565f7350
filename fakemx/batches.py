"""What a writer thread takes from its queue at a time: the item it waited for and
whatever else is queued by then, written in one go (one commit, one write)."""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def with_queued(first: T, get_nowait: Callable[[], T | None], most: int
                ) -> tuple[list[T], bool]:
    """``first`` and what ``get_nowait`` (a queue's) has now, up to ``most`` in all; and
    whether the queue's end (a None, put there by its owner's close) came among them:
    nothing is taken after it."""
    batch = [first]
    while len(batch) < most:
        try:
            more = get_nowait()
        except queue.Empty:
            break
        if more is None:
            return batch, True
        batch.append(more)
    return batch, False
