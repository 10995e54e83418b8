"""Prometheus metrics of the insights poller (process-wide, labelled by ad account)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

LAST_SUCCESS = Gauge(
    "leadwire_insights_last_success_timestamp_seconds",
    "Unix time of the last successful insights refresh of an ad account",
    ["account"],
)
DATA_AGE = Gauge(
    "leadwire_insights_data_age_seconds",
    "Seconds since the last successful insights refresh of an ad account (computed when scraped)",
    ["account"],
)
ROWS_WRITTEN = Counter(
    "leadwire_insights_rows_written_total",
    "insights_daily rows inserted, changed or deleted by refreshes",
    ["account"],
)
REFRESH_GRAPH_CALLS = Histogram(
    "leadwire_insights_refresh_graph_calls",
    "Graph calls (as Meta counts them: each batch item is one) per refresh",
    ["kind"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
LAST_REFRESH_GRAPH_CALLS = Gauge(
    "leadwire_insights_last_refresh_graph_calls",
    "Graph calls made by the last refresh of an ad account",
    ["account"],
)
REFRESHES = Counter(
    "leadwire_insights_refreshes_total",
    "Insights refreshes by outcome (ok, throttled, failed)",
    ["account", "outcome"],
)
REPORT_RUNS = Counter(
    "leadwire_insights_report_runs_total",
    "Async report runs by outcome (completed, failed, skipped, split)",
    ["outcome"],
)


def record_success(account: str, *, rows_changed: int, graph_calls: int, kind: str) -> None:
    finished = time.time()
    LAST_SUCCESS.labels(account).set(finished)
    DATA_AGE.labels(account).set_function(lambda: time.time() - finished)
    ROWS_WRITTEN.labels(account).inc(rows_changed)
    REFRESH_GRAPH_CALLS.labels(kind).observe(graph_calls)
    LAST_REFRESH_GRAPH_CALLS.labels(account).set(graph_calls)
    REFRESHES.labels(account, "ok").inc()
