"""structlog set-up: JSON lines on stdout, with context (correlation_id, event_id, ...) bound per message."""

from __future__ import annotations

import logging
import sys

import structlog

SECRET_KEYS = ("token", "secret", "password", "authorization", "hmac_key")


def _redact(_logger: object, _name: str, event_dict: dict) -> dict:
    for key in event_dict:
        if any(word in key.lower() for word in SECRET_KEYS):
            event_dict[key] = "***"
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    logging.basicConfig(stream=sys.stdout, level=level.upper(), format="%(message)s", force=True)
    for noisy in ("botocore", "aiobotocore", "urllib3", "httpx", "httpcore", "uvicorn.access", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


log = structlog.get_logger()
