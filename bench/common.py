"""What the bench scripts share (they run as `python bench/NAME.py`, so bench/ is on the path)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port free a moment ago (the server is started on it next)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine_header(command: str) -> str:
    """The two comment lines a raw result file starts with: the command, then when and on what."""
    import os
    import platform
    import time

    return (f"# {command}\n# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())};"
            f" {platform.system()} {platform.release()}; {os.cpu_count()} cores;"
            f" Python {platform.python_version()}")
