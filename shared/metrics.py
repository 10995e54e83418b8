"""Prometheus metrics common to all services (per-service metrics live beside their service)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

_LABELS = ("service", "consumer")

MESSAGES_CONSUMED = Counter("leadwire_messages_consumed_total", "Messages handled successfully", _LABELS)
MESSAGES_FAILED = Counter("leadwire_messages_failed_total", "Handler failures (retried or parked)", _LABELS)
MESSAGES_RETRIED = Counter("leadwire_messages_retried_total", "Messages sent to a delay queue", _LABELS)
MESSAGES_PARKED = Counter("leadwire_messages_parked_total", "Messages moved to a parking queue", _LABELS)
MESSAGES_PUBLISHED = Counter("leadwire_messages_published_total", "Messages published and confirmed", ("type",))
HANDLER_SECONDS = Histogram(
    "leadwire_handler_seconds",
    "Time spent in a handler, for successful messages",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@dataclass(frozen=True, slots=True)
class ConsumerSeries:
    """One consumer's children of the consumer metrics: `.labels()` costs a lock and a lookup per call."""

    consumed: Counter
    failed: Counter
    retried: Counter
    parked: Counter
    handler_seconds: Histogram


@functools.cache
def consumer_series(service: str, consumer: str) -> ConsumerSeries:
    return ConsumerSeries(
        MESSAGES_CONSUMED.labels(service, consumer),
        MESSAGES_FAILED.labels(service, consumer),
        MESSAGES_RETRIED.labels(service, consumer),
        MESSAGES_PARKED.labels(service, consumer),
        HANDLER_SECONDS.labels(service, consumer),
    )


@functools.cache
def published(message_type: str) -> Counter:
    """The `MESSAGES_PUBLISHED` child of one message type."""
    return MESSAGES_PUBLISHED.labels(message_type)
