"""Prometheus metrics every service exposes at /metrics."""

from prometheus_client import Counter, Gauge

EVENTS_HANDLED = Counter(
    "modelgate_events_handled_total", "Events taken off the queue, by type and outcome", ["event_type", "outcome"]
)
EVENTS_REFUSED = Counter(
    "modelgate_events_refused_total",
    "Events dead-lettered before handling: unsigned, forged, tampered, wrongly produced or replayed, by kind",
    ["kind"],
)
EVENTS_PUBLISHED = Counter("modelgate_events_published_total", "Events published to the topic")
OUTBOX_PENDING = Gauge("modelgate_outbox_pending", "Events written to the outbox and not yet published")
OUTBOX_SET_ASIDE = Gauge(
    "modelgate_outbox_set_aside", "Outbox events the bus refused for good (too large, invalid), set aside unpublished"
)
AWS_CALLS = Counter("modelgate_aws_calls_total", "Calls made to AWS, by service and operation", ["service", "operation"])
DB_COMMITS = Counter("modelgate_db_commits_total", "Database transactions committed")
