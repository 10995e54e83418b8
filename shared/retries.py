"""How long a failing message is retried, which failures are worth it, and circuit breakers per dependency.

* `RetryPolicy`: a transient failure (a dependency that did not answer: CRM 5xx/429/timeouts/connection errors,
  the database unreachable, Graph 5xx and throttles, a broker hiccup) is retried with exponential backoff and
  jitter (`RETRY_BACKOFF_SECONDS` doubling to `RETRY_BACKOFF_MAX_SECONDS`) until `RETRY_HORIZON_HOURS` have
  passed since the message first failed (the `x-leadwire-first-failure` header), then parked. An error nothing
  classifies (a bug) is retried `RETRY_ATTEMPTS` times, then parked. Poison and `PermanentError` park at once
  (`shared.messaging.settle_failure`).
* `CircuitBreaker`: when a whole dependency is down, calling it once per waiting message only adds load and
  noise. After `BREAKER_FAILURES` consecutive transient failures the breaker opens: callers do not call, their
  messages wait in the delay queues (not parked), and one probe at a time is let through, after a wait that
  doubles from 1 s to `BREAKER_PROBE_MAX_SECONDS`. A probe that succeeds closes it. A 10-minute outage costs
  about 15 probe calls per process, not one call per message and attempt.

Retries never block other messages: a waiting message sits in a delay queue, not in a handler.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import asyncpg

from shared.graph.errors import GraphConnectionError, ThrottledError, TransientError

if TYPE_CHECKING:
    from shared.settings import BrokerSettings

logger = logging.getLogger(__name__)


class Transient(Exception):
    """A dependency failed in a way waiting can fix (raise a subclass): retried until the horizon."""


class DependencyUnavailable(Transient):
    """The dependency's circuit breaker is open: the message waits `delay` seconds without calling it."""

    def __init__(self, dependency: str, delay: float) -> None:
        super().__init__(f"waiting for {dependency} (circuit open)")
        self.dependency = dependency
        self.delay = max(0.0, delay)


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and horizon of the retry machinery (from `BrokerSettings`)."""

    horizon_seconds: float = 24 * 3600.0
    backoff_base: float = 1.0
    backoff_max: float = 900.0
    max_attempts: int = 5  # for errors nothing classifies (bugs)
    breaker_failures: int = 5
    breaker_probe_max: float = 60.0

    @classmethod
    def from_settings(cls, broker: BrokerSettings) -> RetryPolicy:
        return cls(
            horizon_seconds=broker.retry_horizon_hours * 3600.0,
            backoff_base=broker.retry_backoff_seconds,
            backoff_max=max(broker.retry_backoff_seconds, broker.retry_backoff_max_seconds),
            max_attempts=broker.retry_attempts,
            breaker_failures=broker.breaker_failures,
            breaker_probe_max=broker.breaker_probe_max_seconds,
        )

    def backoff(self, attempt: int) -> float:
        """The wait after `attempt` failures (1-based): base doubling to the ceiling, jittered over its upper half."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(max(attempt - 1, 0), 60))
        return random.uniform(ceiling / 2, ceiling)

    def expired(self, first_failure: float | None, *, now: float | None = None) -> bool:
        """Whether a message first failing at `first_failure` (unix seconds) has used up the horizon."""
        if first_failure is None:
            return False
        return (time.time() if now is None else now) - first_failure >= self.horizon_seconds

    def breaker(self, name: str, *, on_open: Callable[[CircuitBreaker], None] | None = None,
                on_close: Callable[[CircuitBreaker], None] | None = None) -> CircuitBreaker:
        return CircuitBreaker(name, failures_to_open=self.breaker_failures, probe_max=self.breaker_probe_max,
                              on_open=on_open, on_close=on_close)


DEFAULT_POLICY = RetryPolicy()

_DB_DOWN = (
    asyncpg.PostgresConnectionError,  # connection lost, refused by the server, ...
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, cannot connect now, crash shutdown
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
)


def is_database_unavailable(exc: BaseException) -> bool:
    """The database did not answer (not: it refused a statement). A socket error that is not an HTTP client's."""
    if isinstance(exc, _DB_DOWN):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, aiohttp.ClientError)


def is_transient(exc: BaseException) -> bool:
    """Whether waiting may fix `exc`: a dependency that did not answer or asked us to wait."""
    if isinstance(exc, Transient | TransientError | GraphConnectionError | ThrottledError):
        return True
    if is_database_unavailable(exc):
        return True
    if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):  # 40: serialization failure, deadlock
        return True
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return True
    try:  # broker hiccups
        import aiormq.exceptions

        if isinstance(exc, aiormq.exceptions.AMQPConnectionError | aiormq.exceptions.ChannelInvalidStateError):
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


# -- circuit breaker --------------------------------------------------------------------------------------------


@dataclass
class CircuitBreaker:
    """Closed → (`failures_to_open` consecutive failures) → open → (wait) → one probe → closed or open again.

    Single event loop, no awaits inside: the state changes are atomic. `allow()` says whether the caller may
    call the dependency now; every allowed call must end with `succeeded()` or `failed()` (a probe that ends
    with neither would hold the breaker half-open: `failed()` is the safe default for an unknown outcome).
    Messages that wait are counted (`hold`) for the incident's reminders.
    """

    name: str
    failures_to_open: int = 5
    probe_first: float = 1.0
    probe_max: float = 60.0
    on_open: Callable[[CircuitBreaker], None] | None = None
    on_close: Callable[[CircuitBreaker], None] | None = None
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    state: str = "closed"  # closed | open | probing
    consecutive_failures: int = 0
    opened_at: float | None = None  # wall clock, for "since 09:12"
    probes: int = 0  # probe calls made in this incident
    last_error: str | None = None
    _probe_wait: float = 0.0
    _next_probe: float = 0.0
    _probe_started: float = 0.0
    _held: set[Hashable] = field(default_factory=set)

    @property
    def is_open(self) -> bool:
        return self.state != "closed"

    def allow(self) -> bool:
        """True: call the dependency (closed, or this caller is the one probe). False: wait `wait_seconds()`."""
        if self.state == "closed":
            return True
        now = self.clock()
        if self.state == "open" and now >= self._next_probe:
            self.state = "probing"
            self._probe_started = now
            self.probes += 1
            logger.info("circuit %s: probing", self.name, extra={"dependency": self.name})
            return True
        if self.state == "probing" and now - self._probe_started > max(self.probe_max, 120.0):
            self._probe_started = now  # a probe that never reported back (its caller died): let another try
            self.probes += 1
            return True
        return False

    def wait_seconds(self) -> float:
        """How long a message should wait before asking again (0 when closed); with jitter so waiters spread."""
        if self.state == "closed":
            return 0.0
        if self.state == "probing":
            return random.uniform(1.0, 2.0)  # the probe answers soon
        left = max(0.0, self._next_probe - self.clock())
        return left + random.uniform(0.0, min(2.0, 0.1 + left * 0.2))

    def succeeded(self) -> None:
        if self.state != "closed":
            waited = len(self._held)
            logger.warning("circuit %s closed: the dependency answers again (%s probes, %s waiting messages)",
                           self.name, self.probes, waited, extra={"dependency": self.name})
            self.state = "closed"
            if self.on_close is not None:
                self.on_close(self)
            self._held.clear()
            self.opened_at = None
            self.probes = 0
        self.consecutive_failures = 0

    def failed(self, reason: str | None = None) -> None:
        self.last_error = reason or self.last_error
        self.consecutive_failures += 1
        if self.state == "probing":
            self._probe_wait = min(self.probe_max, max(self.probe_first, self._probe_wait * 2))
            self._next_probe = self.clock() + self._probe_wait
            self.state = "open"
            logger.info("circuit %s: probe failed, next in %.0fs", self.name, self._probe_wait,
                        extra={"dependency": self.name})
        elif self.state == "closed" and self.consecutive_failures >= self.failures_to_open:
            self.state = "open"
            self.opened_at = self.wall()
            self.probes = 0
            self._probe_wait = min(self.probe_first, self.probe_max)
            self._next_probe = self.clock() + self._probe_wait
            logger.error("circuit %s opened after %s failures in a row (%s): messages wait, one probe at a time",
                         self.name, self.consecutive_failures, reason, extra={"dependency": self.name})
            if self.on_open is not None:
                self.on_open(self)

    def hold(self, key: Hashable) -> None:
        """Count a message that waits for this dependency (distinct keys, while the breaker is open)."""
        if self.state != "closed":
            self._held.add(key)

    @property
    def waiting(self) -> int:
        return len(self._held)
