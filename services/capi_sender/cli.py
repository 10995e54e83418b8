"""`leadwire capi test --event-code TEST123`: send one test event to META_PIXEL_ID and print Meta's answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from contracts.conversions import ConversionRequested, ConversionUser
from services.capi_sender.events import Parked, RequestBatch, prepare_event
from services.capi_sender.settings import CapiSettings
from services.capi_sender.worker import post_events
from shared.graph.errors import GraphError
from shared.settings import MetaSettings, Settings

# A made-up person: Events Manager shows the test event; nobody real is matched.
_TEST_USER = ConversionUser(email="capi-test@example.com", external_id="leadwire-capi-test", country="US")


def register(subparsers: Any) -> None:
    capi = subparsers.add_parser("capi", help="Meta Conversions API tools").add_subparsers(
        dest="capi_command", required=True
    )
    test = capi.add_parser("test", help="send one test event (test_event_code) to META_PIXEL_ID")
    test.add_argument("--event-code", required=True, help="the code shown in Events Manager → Test Events")
    test.add_argument("--event-name", default="Lead", help="event name (default: Lead)")
    test.add_argument("--pixel-id", default=None, help="pixel / dataset id (default: META_PIXEL_ID)")
    test.add_argument("--account", default=None, help="the pixel of this ad account (LEADWIRE_ACCOUNTS_FILE)")
    test.set_defaults(func=_cmd_test)


def pixel_for_test_event(meta: MetaSettings, pixel_id: str | None, account_id: str | None) -> str:
    """The pixel a test event goes to: `--pixel-id`, else `--account`'s pixel, else META_PIXEL_ID ("" if none).
    Raises ValueError for an account that is not configured."""
    account = meta.account(account_id) if account_id else None
    if account_id and account is None:
        raise ValueError(f"no ad account {account_id} is configured")
    return pixel_id or (account.pixel_id if account else None) or meta.pixel_id


def _cmd_test(args: argparse.Namespace) -> int:
    settings = Settings()
    try:
        pixel_id = pixel_for_test_event(settings.meta, args.pixel_id, args.account)
    except ValueError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    if not pixel_id:
        sys.stderr.write("leadwire: set META_PIXEL_ID (or pass --pixel-id) to the pixel that receives the event\n")
        return 2
    return asyncio.run(send_test_event(settings, pixel_id, args.event_code, args.event_name))


async def send_test_event(settings: Settings, pixel_id: str, event_code: str, event_name: str = "Lead") -> int:
    """Send one test event; print Meta's answer (stdout) or error (stderr); return the exit code."""
    from shared.cli import graph_client

    capi = settings.block(CapiSettings)
    now = int(time.time())
    request = ConversionRequested(
        event_name=event_name,
        event_time=now,
        event_id=f"leadwire-capi-test-{now}",
        pixel_id=pixel_id,
        user=_TEST_USER,
        test_event_code=event_code,
        crm_name=capi.capi_crm_name,
    )
    prepared = prepare_event(request, now=now, default_country=capi.default_country)
    if isinstance(prepared, Parked):  # cannot happen for the fixed test user; guards a changed rule
        sys.stderr.write(f"leadwire: test event not sendable: {prepared.reason.value}: {prepared.detail}\n")
        return 1
    batch = RequestBatch(pixel_id=pixel_id, test_event_code=event_code, events=[prepared])
    async with graph_client(settings) as graph:
        try:
            answer = await post_events(graph, batch)
        except GraphError as exc:
            sys.stderr.write(f"leadwire: Meta refused the test event: {exc}\n")
            return 1
    sys.stdout.write(json.dumps({"pixel_id": pixel_id, "event_id": prepared.event_id, "answer": answer}) + "\n")
    return 0
