"""Parked messages: counted for the console, listed, shown, replayed and dropped by `leadwire parked`.

Parked messages live in RabbitMQ, one parking queue per consumer (`shared.topology`), with the reason, the attempt
count, when the message first failed and when it was parked in headers (`shared.messaging.park`).

* Counting (`read_counts`, `count_parked`): a passive declare answers a queue's message count without touching its
  messages (for quorum queues, a count a few seconds old).
* Reading (`sweep`): a queue cannot be read without taking its messages, so a sweep takes each message in turn
  and decides: KEEP (a copy goes back to the end of the queue, confirmed by the broker, before the original is
  acknowledged: the queue's order is kept, and a crash leaves at worst a duplicate, never a loss), REPLAY (a copy
  goes to the consumer's own queue, without the retry headers, then the original is acknowledged), or DROP. A
  sweep takes as many messages as the queue held when it began, and stops early at a copy it put back itself
  (each sweep marks its copies), so it sees each message once. Quorum queues count redeliveries against a
  delivery limit: a sweep never requeues, so listing never uses it up.
* Replay is idempotent: every consumer records the message ids it handled with their effect, and crm_sync never
  delivers a lead twice to an adapter that has it.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import hashlib
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.topology import (
    CONSUMERS,
    H_ATTEMPT,
    H_FIRST_FAILURE,
    H_NOT_BEFORE,
    H_PARKED_AT,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    NAMESPACE,
    Consumer,
    all_consumers,
)

H_SWEEP = "x-leadwire-sweep"
H_REPLAYED_AT = "x-leadwire-replayed-at"
_RETRY_HEADERS = {H_REASON, H_ATTEMPT, H_PARKED_AT, H_FIRST_FAILURE, H_NOT_BEFORE, H_QUEUE, H_SWEEP, "x-death",
                  "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason", "x-delivery-count"}


class Action(enum.Enum):
    KEEP = "keep"
    REPLAY = "replay"
    DROP = "drop"


@dataclass(frozen=True)
class ParkedMessage:
    """One parked message, as `leadwire parked` shows it (the body only with `show --body`)."""

    consumer: Consumer
    id: str  # the envelope's message id (or a hash of the body, for a message that came without one)
    type: str | None
    reason: str
    attempts: int | None
    first_failure: datetime | None
    parked_at: datetime | None
    routing_key: str
    correlation_id: str | None
    body: bytes
    headers: dict[str, Any]

    @property
    def queue(self) -> str:
        return f"{self.consumer.service}/{self.consumer.name}"


# -- counting ---------------------------------------------------------------------------------------------------


async def count_parked(channel: AbstractChannel, queue_name: str) -> int:
    queue = await channel.declare_queue(queue_name, passive=True)
    return int(queue.declaration_result.message_count or 0)


async def read_counts(amqp_url: str, consumers: Sequence[Consumer] = CONSUMERS) -> dict[str, int]:
    """Messages in each consumer's parking queue (`service/queue` -> count); 0 where the queue does not exist (each
    service declares the whole topology when it starts: none has started on this broker yet)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        counts = {}
        for c in consumers:
            try:
                counts[f"{c.service}/{c.name}"] = await count_parked(channel, c.parking_queue_name)
            except aio_pika.exceptions.ChannelNotFoundEntity:  # its service never started here: none parked
                counts[f"{c.service}/{c.name}"] = 0
                channel = await connection.channel(publisher_confirms=False)
        return counts


# -- selecting --------------------------------------------------------------------------------------------------


def resolve_queue(text: str, consumers: Sequence[Consumer] | None = None) -> Consumer:
    """A consumer from what an operator types: `crm_sync/lead_captured`, `crm_sync.lead_captured`, or a queue
    name (its parking queue's too). Raises ValueError naming the choices."""
    known = list(consumers if consumers is not None else all_consumers())
    wanted = text.strip().removesuffix(".parked")
    for c in known:
        if wanted in (f"{c.service}/{c.name}", f"{c.service}.{c.name}", c.queue_name):
            return c
    parts = wanted.split(".")
    if len(parts) == 3 and parts[0] == NAMESPACE and all(parts):  # a consumer queue of tools or tests
        return Consumer(parts[1], parts[2], ())
    choices = ", ".join(f"{c.service}/{c.name}" for c in known)
    raise ValueError(f"no consumer {text!r}; one of: {choices}")


@dataclass(frozen=True)
class Selection:
    """Which parked messages a command is about (all of them by default)."""

    ids: frozenset[str] = frozenset()
    reason: str | None = None
    since: datetime | None = None

    def __call__(self, message: ParkedMessage) -> bool:
        if self.ids and message.id not in self.ids:
            return False
        if self.reason and self.reason.casefold() not in message.reason.casefold():
            return False
        if self.since is not None:
            parked = message.parked_at or message.first_failure
            since = self.since if self.since.tzinfo else self.since.replace(tzinfo=UTC)
            if parked is None or parked < since:
                return False
        return True


# -- reading, replaying, dropping -------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _time(value: object) -> datetime | None:
    text = _text(value)
    if not text:
        return None
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    try:
        return int(_text(value) or "")
    except ValueError:
        return None


def parked_message(consumer: Consumer, message: AbstractIncomingMessage) -> ParkedMessage:
    headers = dict(message.headers or {})
    return ParkedMessage(
        consumer=consumer,
        id=message.message_id or "body:" + hashlib.sha256(message.body).hexdigest()[:16],
        type=message.type,
        reason=_text(headers.get(H_REASON)) or "?",
        attempts=_int(headers.get(H_ATTEMPT)),
        first_failure=_time(headers.get(H_FIRST_FAILURE)),
        parked_at=_time(headers.get(H_PARKED_AT)),
        routing_key=_text(headers.get(H_ROUTING_KEY)) or message.routing_key or "",
        correlation_id=message.correlation_id,
        body=message.body,
        headers=headers,
    )


def _copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    return aio_pika.Message(
        message.body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type=message.content_type, message_id=message.message_id, correlation_id=message.correlation_id,
        type=message.type, timestamp=message.timestamp, app_id=message.app_id,
    )


async def _publish(channel: AbstractChannel, message: aio_pika.Message, queue_name: str) -> None:
    # A confirmed, mandatory publish to one queue: raises if the broker did not take it.
    from shared.messaging import ensure_confirmed

    frame = await channel.default_exchange.publish(message, routing_key=queue_name, mandatory=True)
    ensure_confirmed(frame, queue_name)


Decide = Callable[[ParkedMessage], Action]


async def sweep(amqp_url: str, consumers: Sequence[Consumer], decide: Decide) -> list[tuple[ParkedMessage, Action]]:
    """Take each message of the consumers' parking queues once, in order, and keep, replay or drop it (module doc).
    Returns what was seen and done."""
    seen: list[tuple[ParkedMessage, Action]] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for consumer in consumers:
            try:
                seen.extend(await _sweep_queue(channel, consumer, decide))
            except aio_pika.exceptions.ChannelNotFoundEntity:
                # No parking queue: its service never started on this broker, so nothing is parked there. The
                # broker closed the channel over it.
                channel = await connection.channel(publisher_confirms=True)
    return seen


async def _sweep_queue(
    channel: AbstractChannel, consumer: Consumer, decide: Decide
) -> list[tuple[ParkedMessage, Action]]:
    queue = await channel.get_queue(consumer.parking_queue_name, ensure=True)
    mark = uuid.uuid4().hex
    limit = await count_parked(channel, consumer.parking_queue_name)
    done: list[tuple[ParkedMessage, Action]] = []
    for _ in range(limit):  # the messages there when the sweep began (later ones wait for the next sweep)
        message = await queue.get(no_ack=False, fail=False, timeout=10)
        if message is None:
            break
        headers = dict(message.headers or {})
        if _text(headers.get(H_SWEEP)) == mark:  # the count was stale: back to the end of the queue, and stop
            await _publish(channel, _copy(message, headers), consumer.parking_queue_name)
            await message.ack()
            break
        parked = parked_message(consumer, message)
        action = decide(parked)
        if action is Action.KEEP:
            await _publish(channel, _copy(message, {**headers, H_SWEEP: mark}), consumer.parking_queue_name)
        elif action is Action.REPLAY:
            clean = {k: v for k, v in headers.items() if k not in _RETRY_HEADERS}
            clean[H_REPLAYED_AT] = datetime.now(UTC).isoformat()
            await _publish(channel, _copy(message, clean), consumer.queue_name)
        await message.ack()
        done.append((parked, action))
    return done


async def list_parked(
    amqp_url: str, consumers: Sequence[Consumer], select: Selection | None = None
) -> list[ParkedMessage]:
    select = select or Selection()
    done = await sweep(amqp_url, consumers, lambda _m: Action.KEEP)
    return [message for message, _ in done if select(message)]


async def apply(amqp_url: str, consumers: Sequence[Consumer], select: Selection, action: Action) -> list[ParkedMessage]:
    """Replay or drop the selected messages; the others stay. Returns those acted on."""
    done = await sweep(amqp_url, consumers, lambda m: action if select(m) else Action.KEEP)
    return [message for message, taken in done if taken is action]


# -- `leadwire parked` -------------------------------------------------------------------------------------------


def register(subparsers: Any, amqp_url: Callable[[], str]) -> None:
    """Add `leadwire parked list|show|replay|drop`; `amqp_url()` reads the broker's address when a command runs."""
    parked = subparsers.add_parser("parked", help="messages the consumers parked: list, show, replay, drop")
    sub = parked.add_subparsers(dest="parked_command", required=True)

    def queue_args(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--queue", help="one consumer, e.g. crm_sync/lead_captured (default: every parking queue)")
        cmd.add_argument("--reason", help="only messages whose reason contains this text (case-insensitive)")
        cmd.add_argument("--since", type=_date_arg, help="only messages parked on or after this date/time (UTC)")

    cmd = sub.add_parser("list", help="parked messages with reason, attempts, first and last failure")
    queue_args(cmd)
    cmd.set_defaults(func=lambda args: _cmd_list(args, amqp_url()))
    cmd = sub.add_parser("show", help="one parked message (by id) in full")
    cmd.add_argument("id", nargs="+")
    cmd.add_argument("--queue", help="look in this consumer's parking queue only (default: every one)")
    cmd.add_argument("--body", action="store_true", help="print the message body too (it may hold customer data)")
    cmd.set_defaults(func=lambda args: _cmd_show(args, amqp_url()))
    cmd = sub.add_parser("replay", help="send parked messages back to their consumer (idempotent)")
    cmd.add_argument("id", nargs="*", help="message ids (or use --queue)")
    queue_args(cmd)
    cmd.set_defaults(func=lambda args: _cmd_act(args, amqp_url(), Action.REPLAY))
    cmd = sub.add_parser("drop", help="delete parked messages for good (asks first)")
    cmd.add_argument("id", nargs="*", help="message ids (or use --queue)")
    queue_args(cmd)
    cmd.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    cmd.set_defaults(func=lambda args: _cmd_act(args, amqp_url(), Action.DROP))


def _date_arg(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {value!r} (YYYY-MM-DD or an ISO date-time)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _consumers(args: argparse.Namespace) -> list[Consumer]:
    return [resolve_queue(args.queue)] if getattr(args, "queue", None) else list(CONSUMERS)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_table(messages: Sequence[ParkedMessage]) -> str:
    lines = [f"{'ID':36}  {'QUEUE':34}  {'ATT':>4}  {'FIRST FAILURE (UTC)':19}  {'PARKED (UTC)':19}  REASON"]
    for m in messages:
        lines.append(f"{m.id:36}  {m.queue:34}  {m.attempts if m.attempts is not None else '-':>4}  "
                     f"{_when(m.first_failure):19}  {_when(m.parked_at):19}  {m.reason[:120]}")
    return "\n".join(lines)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _cmd_list(args: argparse.Namespace, amqp_url: str) -> int:
    try:
        consumers = _consumers(args)
    except ValueError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    messages = _run(list_parked(amqp_url, consumers, Selection(reason=args.reason, since=args.since)))
    sys.stdout.write(render_table(messages) + "\n")
    sys.stdout.write(f"{len(messages)} parked message{'s' if len(messages) != 1 else ''}\n")
    return 0


def _cmd_show(args: argparse.Namespace, amqp_url: str) -> int:
    wanted = frozenset(args.id)
    try:
        consumers = _consumers(args)
    except ValueError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    messages = _run(list_parked(amqp_url, consumers, Selection(ids=wanted)))
    for m in messages:
        sys.stdout.write(
            f"id:             {m.id}\nqueue:          {m.queue} ({m.consumer.parking_queue_name})\n"
            f"type:           {m.type or '-'}\nrouting key:    {m.routing_key or '-'}\n"
            f"correlation id: {m.correlation_id or '-'}\nattempts:       {m.attempts if m.attempts else '-'}\n"
            f"first failure:  {_when(m.first_failure)} UTC\nparked:         {_when(m.parked_at)} UTC\n"
            f"reason:         {m.reason}\n"
        )
        if args.body:
            sys.stdout.write(f"body:           {m.body.decode('utf-8', 'replace')}\n")
        sys.stdout.write("\n")
    missing = sorted(wanted - {m.id for m in messages})
    if missing:
        sys.stderr.write(f"leadwire: not parked: {' '.join(missing)}\n")
        return 1
    return 0


def _cmd_act(args: argparse.Namespace, amqp_url: str, action: Action) -> int:
    if not args.id and not args.queue:
        sys.stderr.write(f"leadwire: name message ids, or pass --queue (see `leadwire parked list`) to "
                         f"{action.value}\n")
        return 2
    try:
        consumers = _consumers(args)
    except ValueError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    select = Selection(ids=frozenset(args.id), reason=args.reason, since=args.since)
    if action is Action.DROP and not args.yes:
        chosen = _run(list_parked(amqp_url, consumers, select))
        if not chosen:
            sys.stdout.write("nothing to drop\n")
            return 0
        sys.stdout.write(render_table(chosen) + "\n")
        sys.stdout.write(f"Drop these {len(chosen)} messages for good? Type 'yes' to confirm: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() != "yes":
            sys.stdout.write("nothing dropped\n")
            return 1
        select = Selection(ids=frozenset(m.id for m in chosen))  # exactly what was shown, nothing parked since
    done = _run(apply(amqp_url, consumers, select, action))
    verb = "replayed" if action is Action.REPLAY else "dropped"
    for m in done:
        sys.stdout.write(f"{verb} {m.id} ({m.queue})\n")
    sys.stdout.write(f"{len(done)} message{'s' if len(done) != 1 else ''} {verb}\n")
    missing = sorted(set(args.id) - {m.id for m in done})
    if missing:
        sys.stderr.write(f"leadwire: not parked: {' '.join(missing)}\n")
        return 1
    return 0
