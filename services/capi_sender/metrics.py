"""Prometheus metrics of the Conversions API sender (on the service's /metrics)."""

from prometheus_client import Counter, Histogram

EVENTS_SENT = Counter("leadwire_capi_events_sent_total", "Events in requests Meta accepted")
EVENTS_DEDUPED = Counter(
    "leadwire_capi_events_deduped_total",
    "Repeats acked without sending: `batch` = two copies in one batch, `log` = already sent within 48 h",
    ("where",),
)
EVENTS_PARKED = Counter("leadwire_capi_events_parked_total", "Events parked instead of sent, by reason", ("reason",))
EVENTS_RETRIED = Counter(
    "leadwire_capi_events_retried_total", "Events handed back to the retry queues, by cause", ("cause",)
)
REQUESTS = Counter(
    "leadwire_capi_requests_total",
    "POST /{pixel}/events calls by outcome (accepted, rejected, throttled, failed)",
    ("outcome",),
)
BATCH_EVENTS = Histogram(
    "leadwire_capi_request_events",
    "Events per Conversions API request",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 750, 1000),
)
FLUSH_SECONDS = Histogram(
    "leadwire_capi_flush_seconds",
    "Time to check, claim, send and record one batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
OUTCOMES_MATCHED = Counter(
    "leadwire_capi_outcomes_matched_total",
    "Conversions by how they were tied to a stored lead: lead_id, crm_reference, email, phone, or unmatched "
    "(sent with only what the CRM gave)",
    ("by",),
)
