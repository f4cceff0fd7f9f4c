"""Waiting in tests: poll a condition until it holds or a deadline passes, never a fixed sleep.

`wait_until` polls a plain predicate (for threads and processes); `eventually` polls a predicate
that may be a coroutine function, without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> bool:
    """True as soon as `predicate()` is truthy; its last value once `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


async def eventually(
    predicate: Callable[[], Awaitable[Any] | Any],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """The first truthy value of `predicate()` (awaited when it is a coroutine); fails the test
    with `what` when `timeout` seconds pass without one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not hold within {timeout} s"
        await asyncio.sleep(interval)
