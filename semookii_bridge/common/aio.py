"""Small asyncio helpers shared by the core and the edges."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def completer(future: asyncio.Future[None]) -> Callable[[], None]:
    """A callback that completes `future` (once; later calls do nothing)."""

    def done() -> None:
        if not future.done():
            future.set_result(None)

    return done
