"""Work the app repeats in the background while it runs (entered in its lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager


@asynccontextmanager
async def every(seconds: float, action: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Run `action` now and then every `seconds` until the block ends; then cancel it.

    `action` handles its own errors: one that escapes ends the repetition.
    """

    async def repeat() -> None:
        while True:
            await action()
            await asyncio.sleep(seconds)

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
