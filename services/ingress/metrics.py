"""Prometheus metrics of the ingress."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "leadwire_ingress_requests_total",
    "Requests to the ingress endpoints by outcome (ok, forbidden, malformed, broker_unavailable, ...)",
    ("endpoint", "outcome"),
)
LEADGENS_PUBLISHED = Counter(
    "leadwire_ingress_leadgen_published_total", "Leadgen changes published with a broker confirm"
)
CHANGES_IGNORED = Counter(
    "leadwire_ingress_changes_ignored_total",
    "Webhook changes acknowledged but not published (not page/leadgen)",
    ("object", "field"),
)
CONVERSIONS_PUBLISHED = Counter(
    "leadwire_ingress_conversions_published_total", "CRM conversion events published with a broker confirm"
)
PUBLISH_SECONDS = Histogram(
    "leadwire_ingress_publish_seconds",
    "Time to publish every message of one request and get the broker's confirms",
    ("endpoint",),
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
