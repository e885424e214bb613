"""Binds handlers to what they need, the way cosmicpython's bootstrap does: by parameter name.

A handler is a plain `async def on_x(event, uow, <dependency>...)`. A service's bootstrap lists its handlers
(event type -> function) and the dependencies it built; `inject` binds each handler's extra parameters from
them, so every service wires its handlers the same way and a test can bind fakes the same way too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from shared.bus import Handler


def inject(handlers: Mapping[str, Callable[..., Any]], **dependencies: Any) -> dict[str, Handler]:
    """Event type -> handler taking (event, uow), with every other parameter bound from `dependencies`."""
    return {event_type: _bind(handler, dependencies) for event_type, handler in handlers.items()}


def _bind(handler: Callable[..., Any], dependencies: Mapping[str, Any]) -> Handler:
    wanted = list(inspect.signature(handler).parameters.values())[2:]  # after (event, uow)
    missing = [p.name for p in wanted if p.name not in dependencies and p.default is inspect.Parameter.empty]
    if missing:
        raise TypeError(f"{handler.__qualname__} needs {', '.join(missing)}: pass it to inject()")
    return partial(handler, **{p.name: dependencies[p.name] for p in wanted if p.name in dependencies})
