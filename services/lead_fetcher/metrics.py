"""Prometheus metrics of the lead fetcher (on the service's /metrics)."""

from prometheus_client import Counter, Histogram

LEADS_CAPTURED = Counter(
    "leadwire_leads_captured_total",
    "Leads stored for the first time (each with its LeadCaptured), by source (webhook, backfill)",
    ("source",),
)
DUPLICATES_SKIPPED = Counter(
    "leadwire_lead_duplicates_skipped_total",
    "Leads not stored again: `stored` = found stored before any Graph read, `concurrent` = stored by another "
    "copy between the check and the insert, `reemitted` = stored without its LeadCaptured, which was enqueued",
    ("stage",),
)
READS = Counter(
    "leadwire_lead_reads_total",
    "Lead reads from Meta by outcome (ok, throttled, not_readable, access_refused, error, unusable)",
    ("outcome",),
)
BATCH_SIZE = Histogram(
    "leadwire_lead_fetcher_batch_size",
    "Items per coalesced operation: `graph_read` = leads per Graph call, `lookup` = leads per stored-check "
    "query, `store` = leads per insert transaction",
    ("operation",),
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
