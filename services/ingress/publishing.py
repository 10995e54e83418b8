"""Publish a request's messages concurrently and succeed only if the broker confirmed every one of them.

The ingress answers Meta, which will not send a lead again once it got 200: a delivery is 200 only when every
message of it was confirmed (`shared.messaging.publish` raises for a returned or nacked message).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from faststream.rabbit.publisher import RabbitPublisher

from contracts.envelope import Envelope
from services.ingress import metrics
from services.ingress.errors import BrokerUnavailable
from shared.messaging import publish

logger = logging.getLogger(__name__)

PER_MESSAGE_SECONDS = 0.005


async def publish_all(
    publisher: RabbitPublisher, messages: Sequence[Envelope[Any]], *, confirm_within: float, endpoint: str
) -> None:
    """Publish all `messages` at once; raise `BrokerUnavailable` unless every one was confirmed.

    Some may have been confirmed when others failed: the sender's retry publishes them again with the same
    message ids, and consumers drop the duplicates.
    """
    if not messages:
        return
    started = time.perf_counter()
    # One channel sends the messages one after the other, so a big delivery (Meta batches up to 1,000 changes)
    # gets a few milliseconds more per message on top of the broker's confirm time.
    budget = confirm_within + PER_MESSAGE_SECONDS * len(messages)
    try:
        async with asyncio.timeout(budget):  # also bounds a driver waiting for a reconnect
            if len(messages) == 1:  # the common delivery: no tasks to create
                results = [await _attempt(publish(publisher, messages[0], confirm_within=budget))]
            else:
                results = await asyncio.gather(
                    *(_attempt(publish(publisher, m, confirm_within=budget)) for m in messages)
                )
    except TimeoutError:
        results = [TimeoutError()]
    failures = [r for r in results if r is not None]
    metrics.PUBLISH_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
    if failures:
        first = failures[0]
        reason = "timed out waiting for the broker" if isinstance(first, TimeoutError) else type(first).__name__
        logger.error(
            "publish failed for %d of %d messages: %s", len(failures), len(messages), reason,
            extra={"endpoint": endpoint, "message_ids": [str(m.message_id) for m in messages[:20]]},
        )
        raise BrokerUnavailable("messages not safely queued; retry later")


async def _attempt(publishing: Coroutine[Any, Any, None]) -> Exception | None:
    try:
        await publishing
    except Exception as exc:  # reported together by the caller
        return exc
    return None
