"""What the bench scripts share (they run as `python bench/NAME.py`, so bench/ is on the path)."""

from __future__ import annotations


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
