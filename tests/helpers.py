"""Small test helpers: poll against a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Returns check()'s first truthy result; fails with the last result or error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = await check()
            if last:
                return last  # type: ignore[return-value]
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"not true within {timeout}s; last: {last!r}")


def wait_until(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last  # type: ignore[return-value]
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"not true within {timeout}s; last: {last!r}")
