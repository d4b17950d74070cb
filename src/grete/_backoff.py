"""Exponential backoff, shared by reconnects and produce retries."""

from __future__ import annotations

# 2 ** 1024 no longer fits a float: a count of failures that large (a broker down
# for a long while, an unlimited retry budget) must not turn into an OverflowError.
# By 2 ** 32 every base in use is long past its cap.
_MAX_DOUBLINGS = 32


def backoff_ceiling(base_s: float, max_s: float, failures: int) -> float:
    """``base_s`` doubled per failure after the first, at most ``max_s``."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return min(max_s, base_s * float(1 << doublings))
