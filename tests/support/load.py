"""Measures and loads the timing tests share: the most events in any window, and busy processes on every core."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator


def max_in_window(stamps: list[float], window: float) -> int:
    best, start = 0, 0
    for end in range(len(stamps)):
        while stamps[end] - stamps[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@contextlib.contextmanager
def cpu_burners(count: int = 2) -> Iterator[None]:
    """Other processes loading every core while the block runs."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)
