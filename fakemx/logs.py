"""Log lines that a client can cause: escaped, and at most one per condition per interval.

aiosmtpd logs a warning per unknown command (with the command's bytes) and
asyncio an error with a traceback per failed accept(); a hostile client once
made 171 MB of stderr in 80 s, and a ClientHello's bytes reached the terminal
raw. Both loggers get this filter when a server starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fakemx.clientbytes import shown

INTERVAL_SECONDS = 10.0
_LOGGERS = ("mail.log", "asyncio")  # aiosmtpd's logger, asyncio's
_MAX_KEYS = 1024


class Throttle(logging.Filter):
    """Lets the first record of a kind through per interval, escaped; counts the rest."""

    def __init__(
        self, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # The kind is the message template, not its arguments (which carry the client's bytes).
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = self._clock()
        last, held_back = self._seen.get(key, (float("-inf"), 0))
        if now - last < self.interval:
            self._seen[key] = (last, held_back + 1)
            return False
        if len(self._seen) >= _MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        text = shown(record.getMessage())
        if held_back:
            text += f" ({held_back} more like this in the last {self.interval:g} s not shown)"
            record.exc_info = None  # the first one had its traceback
            record.exc_text = None
        record.msg, record.args = text, None
        return True


def install() -> None:
    """Put one Throttle on aiosmtpd's and asyncio's loggers (idempotent)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Throttle) for f in logger.filters):
            logger.addFilter(Throttle())
