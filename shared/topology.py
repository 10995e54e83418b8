"""Every exchange, queue, retry and parking queue of leadwire, and which routing keys each queue takes.

Routing keys are part of the contracts (`contracts.messages.RoutingKey`); the broker layout is here, and names appear
nowhere else.

Layout on the broker:

* `leadwire` (topic, durable): all business messages. Routing keys `conversion.requested` and `campaign.command`
  are pinned for outside systems; the others are ours and carry their version.
* One durable quorum queue per consumer, `leadwire.<service>.<consumer>`, bound to its routing keys.
* Delayed retries without a broker plugin: shared delay queues `leadwire.delay.<n>s` hold a message for `n`
  seconds (queue TTL), then dead-letter it into `leadwire.retry` (headers exchange), where each consumer queue is
  bound on the header `leadwire-retry-queue` = its own name. So a retry returns to the one consumer that failed, not
  to every subscriber of the routing key. Longer waits hop through the longest tier until due.
* One parking queue per consumer, `leadwire.<service>.<consumer>.parked`: the original body, with the reason and
  attempt count in headers. Nothing consumes it automatically; operators inspect and replay.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from faststream.rabbit import ExchangeType, QueueType, RabbitExchange, RabbitQueue

from contracts.messages import RoutingKey


def _namespace(value: str | None) -> str:
    """The first part of every exchange and queue name: `leadwire`, unless LEADWIRE_BROKER_NAMESPACE names another
    (two installs sharing one vhost; the test suite on a broker where it cannot make a vhost of its own)."""
    name = value or "leadwire"
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name):
        raise ValueError(f"LEADWIRE_BROKER_NAMESPACE: lowercase letters, digits, _ and - only, not {name!r}")
    return name


NAMESPACE = _namespace(os.environ.get("LEADWIRE_BROKER_NAMESPACE"))
EXCHANGE = RabbitExchange(NAMESPACE, type=ExchangeType.TOPIC, durable=True)
RETRY_EXCHANGE = RabbitExchange(f"{NAMESPACE}.retry", type=ExchangeType.HEADERS, durable=True)

# Seconds a message waits in each delay queue. A wait is served by the largest tier not above it; what remains
# is served by further hops (the `x-leadwire-not-before` header tells the consumer when the message is due).
DELAY_TIERS: tuple[int, ...] = (1, 5, 30, 120, 600)

# Headers our retry and parking machinery sets. The routing header must not start with `x-`: a headers exchange
# ignores such headers when matching, which would send every retry to every consumer queue.
H_QUEUE = "leadwire-retry-queue"
H_ATTEMPT = "x-leadwire-attempt"
H_NOT_BEFORE = "x-leadwire-not-before"
H_REASON = "x-leadwire-reason"
H_ROUTING_KEY = "x-leadwire-routing-key"
H_PARKED_AT = "x-leadwire-parked-at"
# When the message first failed (unix seconds): the retry horizon counts from it; parked copies keep it.
H_FIRST_FAILURE = "x-leadwire-first-failure"




@dataclass(frozen=True)
class Consumer:
    """One durable queue, its bindings, and its parking queue."""

    service: str
    name: str
    routing_keys: tuple[str, ...]

    @property
    def queue_name(self) -> str:
        return f"{NAMESPACE}.{self.service}.{self.name}"

    @property
    def parking_queue_name(self) -> str:
        return f"{self.queue_name}.parked"

    @property
    def queue(self) -> RabbitQueue:
        # declare=False: `declare_topology` declares it with all its bindings before consumers start.
        return RabbitQueue(self.queue_name, queue_type=QueueType.QUORUM, durable=True, declare=False)


CONSUMERS: tuple[Consumer, ...] = (
    Consumer("lead_fetcher", "leadgen_received", (RoutingKey.LEADGEN_RECEIVED,)),
    # crm_sync's redeliver asks the owner of `leads` to emit a stored lead's LeadCaptured again.
    Consumer("lead_fetcher", "redeliver_lead", (RoutingKey.REDELIVER_LEAD,)),
    Consumer("crm_sync", "lead_captured", (RoutingKey.LEAD_CAPTURED,)),
    Consumer("capi_sender", "conversion_requested", (RoutingKey.CONVERSION_REQUESTED,)),
    # Each captured lead is the funnel's first CRM stage for Meta ("Lead"; CAPI_SEND_LEAD_STAGE).
    Consumer("capi_sender", "lead_captured", (RoutingKey.LEAD_CAPTURED,)),
    Consumer("rules_engine", "insights_updated", (RoutingKey.INSIGHTS_UPDATED,)),
    # CRM outcomes (qualified lead, signed case) feed cost-per-signed-case rules: a read model of its own.
    Consumer("rules_engine", "crm_outcomes", (RoutingKey.CONVERSION_REQUESTED,)),
    Consumer("rules_engine", "command_results", (RoutingKey.COMMAND_RESULT,)),
    # Alerts from every service become notifications (log, Slack, email).
    Consumer("rules_engine", "alerts", (RoutingKey.ALERT_RAISED,)),
    # The operator's consent (enable / disable a rule) and verdicts on shadow decisions: CLI and console send them.
    Consumer("rules_engine", "rule_consent", (RoutingKey.RULE_CONSENT_CHANGED,)),
    Consumer("rules_engine", "decision_reviews", (RoutingKey.RULE_DECISION_REVIEWED,)),
    Consumer("campaign_executor", "campaign_command", (RoutingKey.CAMPAIGN_COMMAND,)),
)

_BY_QUEUE = {consumer.queue_name: consumer for consumer in CONSUMERS}


def consumer(service: str, name: str) -> Consumer:
    return _BY_QUEUE[f"{NAMESPACE}.{service}.{name}"]


def consumers_of(service: str) -> tuple[Consumer, ...]:
    return tuple(c for c in _BY_QUEUE.values() if c.service == service)


def all_consumers() -> tuple[Consumer, ...]:
    """Every consumer queue known here, registered extras included."""
    return tuple(_BY_QUEUE.values())


def by_queue_name(queue_name: str) -> Consumer | None:
    return _BY_QUEUE.get(queue_name)


def has_consumer(routing_key: str) -> bool:
    """Whether some leadwire consumer takes this routing key (then an unroutable publish is an error)."""
    return any(routing_key in c.routing_keys for c in _BY_QUEUE.values())


def register(extra: Consumer) -> Consumer:
    """Make an extra consumer known to the retry/park machinery (tests and tools use their own queues)."""
    _BY_QUEUE[extra.queue_name] = extra
    return extra


def delay_queue_name(seconds: int) -> str:
    return f"{NAMESPACE}.delay.{seconds}s"


def delay_queue(seconds: int) -> RabbitQueue:
    return RabbitQueue(
        delay_queue_name(seconds),
        durable=True,
        arguments={"x-message-ttl": seconds * 1000, "x-dead-letter-exchange": RETRY_EXCHANGE.name},
    )


def delay_tier(wait_seconds: float) -> int:
    """The delay queue to use for a wait: the largest tier not above it (at least the smallest)."""
    fitting = [tier for tier in DELAY_TIERS if tier <= wait_seconds]
    return fitting[-1] if fitting else DELAY_TIERS[0]
