"""Prometheus metrics for the Graph client, created once per registry."""

from __future__ import annotations

import re
import threading
import weakref
from typing import ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_ACT_RE = re.compile(r"^act_\d+$")
_ID_RE = re.compile(r"^\d+(_\d+)?$")
_VERSION_RE = re.compile(r"^v\d+\.\d+$")


def endpoint_template(path: str) -> str:
    """`/act_123/insights` → `/act_{id}/insights`, `/123_456` → `/{id}`: low-cardinality metric labels."""
    parts = []
    for segment in path.split("?", 1)[0].strip("/").split("/"):
        if not segment or _VERSION_RE.match(segment):
            continue
        if _ACT_RE.match(segment):
            parts.append("act_{id}")
        elif _ID_RE.match(segment):
            parts.append("{id}")
        else:
            parts.append(segment)
    return "/" + "/".join(parts)


class GraphMetrics:
    """The client's metrics. Use `GraphMetrics.for_registry(registry)`: one instance per registry."""

    _instances: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, GraphMetrics]] = (
        weakref.WeakKeyDictionary()
    )
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "graph_calls",
            "Graph API HTTP calls by endpoint template, method and outcome",
            ["endpoint", "method", "outcome"],
            registry=registry,
        )
        self.call_seconds = Histogram(
            "graph_call_duration_seconds",
            "Graph API call latency (one HTTP round trip)",
            ["endpoint"],
            registry=registry,
        )
        self.throttle_wait = Counter(
            "graph_throttle_wait_seconds",
            "Seconds spent waiting before calls because a scope was blocked or near its limit",
            ["scope", "reason"],
            registry=registry,
        )
        self.usage = Gauge(
            "graph_usage_percent",
            "Last usage percentage Meta reported per scope",
            ["scope"],
            registry=registry,
            multiprocess_mode="livemax",  # worker processes (CAPI_WORKERS) share Meta's quota: the highest counts
        )
        self.throttled = Counter(
            "graph_throttled",
            "Throttle errors received from Meta per scope",
            ["scope"],
            registry=registry,
        )
        self.retries = Counter(
            "graph_retries",
            "Retries by reason (transient, throttled, network, batch_item)",
            ["reason"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> GraphMetrics:
        registry = registry if registry is not None else REGISTRY
        with cls._lock:
            metrics = cls._instances.get(registry)
            if metrics is None:
                metrics = cls._instances[registry] = cls(registry)
            return metrics
