"""Prometheus metrics of crm_sync."""

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "leadwire_crm_deliveries_total",
    "CRM delivery attempts by adapter and outcome (delivered, retry, failed, duplicate, skipped)",
    ("adapter", "outcome"),
)
DELIVERY_SECONDS = Histogram(
    "leadwire_crm_delivery_seconds",
    "Time of one CRM request",
    ("adapter",),
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GROUP_SIZE = Histogram(
    "leadwire_crm_delivery_group_size",
    "Leads per delivery transaction (concurrent LeadCaptured messages share one)",
    buckets=(1, 2, 5, 10, 20, 50),
)
