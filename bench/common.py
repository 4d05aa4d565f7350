"""What the bench scripts share (they run as `python bench/NAME.py`, so bench/ is on the path)."""

from __future__ import annotations


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
