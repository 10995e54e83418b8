"""Conversions API validation: whole-request rejection naming the event index, hashing, combos, limits."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from tests.fixtures.sandbox import SandboxHandle


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def event(**override: Any) -> dict[str, Any]:
    base = {
        "event_name": "Lead",
        "event_time": int(time.time()) - 60,
        "action_source": "system_generated",
        "user_data": {"em": [sha("mary@example.com")], "lead_id": "880000000000123"},
        "custom_data": {"lead_event_source": "leadwire", "event_source": "crm"},
    }
    base.update(override)
    return base


async def post(sandbox: SandboxHandle, events: list[Any], as_json: bool = False, **extra: Any) -> tuple[int, Any]:
    pixel = sandbox.state["pixel_id"]
    if as_json:
        status, _, body = await sandbox.graph("POST", f"{pixel}/events", json_body={"data": events, **extra})
    else:
        status, _, body = await sandbox.graph("POST", f"{pixel}/events", data=json.dumps(events), **extra)
    return status, body


async def test_valid_events_form_and_json(sandbox: SandboxHandle) -> None:
    status, body = await post(sandbox, [event(), event()], test_event_code="TEST1")
    assert status == 200
    assert body["events_received"] == 2
    assert body["messages"] == []
    assert body["fbtrace_id"]
    status, body = await post(sandbox, [event()], as_json=True)
    assert (status, body["events_received"]) == (200, 1)
    stored = await sandbox.capi_events(sandbox.state["pixel_id"])
    assert stored["requests"] == 2
    assert len(stored["events"]) == 3
    assert stored["events"][0]["test_event_code"] == "TEST1"


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ({"event_name": None}, "event_name"),
        ({"event_time": int(time.time()) - 8 * 86400}, "too far in the past"),
        ({"event_time": int(time.time()) + 3600}, "future"),
        ({"action_source": "fax"}, "action_source"),
        ({"user_data": {"em": "Mary@Example.com"}}, "user_data.em"),
        ({"user_data": {"ph": [sha("1"), "ABC"]}}, "user_data.ph"),
        ({"user_data": {"fn": sha("mary"), "ge": sha("f")}}, "Insufficient"),
        ({"user_data": {"db": sha("19970216"), "client_user_agent": "UA"}}, "Insufficient"),
        (
            {"action_source": "website", "user_data": {"em": sha("a@b.c"), "client_user_agent": "UA"}},
            "event_source_url",
        ),
        (
            {"action_source": "website", "event_source_url": "https://x", "user_data": {"em": sha("a@b.c")}},
            "client_user_agent",
        ),
    ],
)
async def test_one_invalid_event_rejects_the_request(sandbox: SandboxHandle, bad: dict, needle: str) -> None:
    status, body = await post(sandbox, [event(), event(), event(**bad)])
    assert status == 400
    err = body["error"]
    assert err["code"] == 100
    assert "event 2" in err["message"]
    assert needle in json.dumps(err)
    assert (await sandbox.capi_events())["events"] == []


async def test_at_most_1000_events(sandbox: SandboxHandle) -> None:
    status, body = await post(sandbox, [event()] * 1001)
    assert status == 400
    assert body["error"]["code"] == 100
    status, body = await post(sandbox, [event()] * 1000)
    assert (status, body["events_received"]) == (200, 1000)
