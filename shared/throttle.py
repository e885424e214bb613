"""Throttling of failed authentication, per source address and per principal.

Promise: after `limit` failures of one key within `window_seconds`, that key is refused with 429 and a
`Retry-After` saying when the oldest failure leaves the window; successes do not count. Kept in memory per
process (each replica throttles on its own, which bounds guessing at `limit` x replicas per window).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque

from shared.errors import Refused


class Throttled(Refused):
    def __init__(self, retry_after: int, what: str):
        super().__init__(429, f"too many failed attempts from {what}; try again in {retry_after} s")
        self.retry_after = retry_after


class FailureThrottle:
    def __init__(self, limit: int = 10, window_seconds: float = 60.0, max_keys: int = 50_000):
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key: str, what: str, limit: int | None = None) -> None:
        """Raises Throttled when `key` has failed `limit` (default: the throttle's) times within the window."""
        failures = self._recent(key)
        if failures is not None and len(failures) >= (limit or self.limit):
            raise Throttled(max(1, math.ceil(failures[0] + self.window - time.monotonic())), what)

    def failed(self, key: str) -> None:
        failures = self._recent(key)
        if failures is None:
            failures = self._failures[key] = deque()
        failures.append(time.monotonic())
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def _recent(self, key: str) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        horizon = time.monotonic() - self.window
        while failures and failures[0] < horizon:
            failures.popleft()
        return failures
