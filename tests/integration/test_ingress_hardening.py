"""The ingress against inputs found from outside (issue 14, item 6), with the real RabbitMQ.

Non-ASCII digits in ids, implausible epochs, non-finite numbers and lone surrogates, slow and vanishing clients,
and metric labels taken from webhook content.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import string
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import REGISTRY

from services.ingress import logic
from services.ingress.settings import IngressSettings
from shared.settings import BrokerSettings, MetaSettings, Settings
from tests.fixtures.infra import eventually
from tests.fixtures.taps import Tap
from tests.integration import test_ingress as base
from tests.integration.test_ingress import (
    APP_SECRET,
    CRM_SECRET,
    VERIFY_TOKEN,
    Ingress,
    conversion,
    delivery,
    lead_id,
    sign,
    start_ingress,
)

# The ingress suite's fixtures, by the same names.
vamqp = base.vamqp
ingress = base.ingress
leadgen_tap = base.leadgen_tap
conversion_tap = base.conversion_tap

BEARER = {"Authorization": f"Bearer {CRM_SECRET}"}
TIMEOUT = 1.0  # header and body timeouts of the `slow` ingress (15 s and 30 s by default)


@pytest.fixture
async def slow(settings: Settings, vhost_url: str) -> AsyncIterator[Ingress]:
    """An ingress with one-second header and body timeouts."""
    service = await start_ingress(settings.replace(
        MetaSettings(app_secret=APP_SECRET, webhook_verify_token=VERIFY_TOKEN),
        IngressSettings(ingress_port=0, crm_events_secret=CRM_SECRET, ingress_header_timeout_seconds=TIMEOUT,
                        ingress_body_timeout_seconds=TIMEOUT, ingress_publish_timeout_seconds=2.0),
        BrokerSettings(amqp_url=vhost_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5),
    ))
    async with aiohttp.ClientSession() as http:
        yield Ingress(service, http)
    await service.stop()


# ------------------------------------------------------------------------------------------------------- ids


NON_ASCII_DIGITS = ["١٢٣٤٥٦٧٨٩٠١٢٣٤٥", "１２３４５６７８９０１２３４５"]


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS, ids=["arabic-indic", "fullwidth"])
async def test_ids_with_non_ascii_digits_are_refused(ingress: Ingress, leadgen_tap: Tap, conversion_tap: Tap,
                                                     digits: str) -> None:
    good = lead_id()
    payload = delivery([good])
    payload["entry"][0]["changes"][0]["value"]["leadgen_id"] = digits
    status, answer = await ingress.post_signed(payload)
    assert status == 400, answer
    assert "leadgen_id" in answer["error"]
    assert [b for b in await leadgen_tap.bodies() if b["payload"]["leadgen_id"] in (digits, good)] == []

    status, answer = await ingress.post_crm(json.dumps(conversion(pixel_id=digits)).encode(), BEARER)
    assert status == 422, answer
    assert [e["path"] for e in answer["errors"]] == ["pixel_id"]
    assert await conversion_tap.bodies() == []


# ---------------------------------------------------------------------------------------------------- epochs


@pytest.mark.parametrize("created_time", [1_790_000_000_000, 10**20, "1790000000", -5])
async def test_an_implausible_created_time_is_dropped_not_the_lead(ingress: Ingress, leadgen_tap: Tap,
                                                                   created_time: Any) -> None:
    lid = lead_id()
    payload = delivery([lid])
    payload["entry"][0]["changes"][0]["value"]["created_time"] = created_time
    status, answer = await ingress.post_signed(payload)
    assert status == 200, answer
    [body] = [b for b in await leadgen_tap.bodies() if b["payload"]["leadgen_id"] == lid]
    assert body["payload"]["created_time"] is None


# --------------------------------------------------------------------------- non-finite numbers, lone surrogates


def _with(event: dict[str, Any], marker: str, literal: str) -> bytes:
    return json.dumps(event).replace(f'"{marker}"', literal).encode()


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_with(conversion(custom_data={"value": "V", "currency": "USD"}), "V", "NaN"), "<root>"),
        (_with(conversion(custom_data={"value": "V", "currency": "USD"}), "V", "Infinity"), "<root>"),
        (_with(conversion(custom_data={"value": "V", "currency": "USD"}), "V", "1e400"), "custom_data.value"),
        (_with(conversion(custom_data={"case_value": "V"}), "V", "-1e400"), "custom_data"),
        (_with(conversion(event_time="V"), "V", "1e400"), "event_time"),
        (_with(conversion(event_name="V"), "V", '"\\ud800"'), "event_name"),
        (_with(conversion(custom_data={"note": "V"}), "V", '"a\\udc00b"'), "custom_data.note"),
        (_with(conversion(event_name="V"), "V", '"Signed\\u0000Case"'), "event_name"),
    ],
    ids=["nan", "infinity", "1e400-value", "1e400-extra", "1e400-time", "lone-high-surrogate", "lone-low-surrogate",
         "nul"],
)
async def test_non_finite_numbers_and_lone_surrogates_answer_422(ingress: Ingress, conversion_tap: Tap,
                                                                 body: bytes, path: str) -> None:
    status, answer = await ingress.post_crm(body, BEARER)
    assert status == 422, answer
    assert [e["path"] for e in answer["errors"]] == [path]
    # The service goes on: a valid event right after is accepted.
    status, answer = await ingress.post_crm(json.dumps(conversion()).encode(), BEARER)
    assert status == 202, answer
    assert len(await conversion_tap.bodies()) == 1


# --------------------------------------------------------------------------------------- slow and gone clients


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), 0.2) == b""
    except TimeoutError:
        return False


async def test_a_slow_loris_connection_is_closed(slow: Ingress) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow.service.ops_port)
    writer.write(b"POST /webhooks/meta HTTP/1.1\r\nHost: leadwire\r\n")
    await writer.drain()

    async def trickle_until_closed() -> bool:
        try:
            writer.write(b"X")  # one more byte of a header that never ends
            await writer.drain()
        except ConnectionError:
            return True
        return await _closed(reader)

    await eventually(trickle_until_closed, timeout=60, interval=0.3, what="the slow-loris connection closed")
    writer.close()
    # The ingress still serves everyone else.
    status, _ = await slow.post_signed(delivery([lead_id()]))
    assert status == 200


async def test_a_body_that_never_completes_answers_408(slow: Ingress) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", slow.service.ops_port)
    writer.write(b"POST /crm/events HTTP/1.1\r\nHost: leadwire\r\nContent-Length: 500\r\n"
                 b"Authorization: Bearer " + CRM_SECRET.encode() + b"\r\n\r\n{\"event_name\": ")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), timeout=60)
    assert status_line.split()[1] == b"408", status_line
    writer.close()


async def test_a_client_leaving_mid_body_is_an_info_line_not_an_error(
    ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _reader, writer = await asyncio.open_connection("127.0.0.1", ingress.service.ops_port)
    writer.write(b"POST /crm/events HTTP/1.1\r\nHost: leadwire\r\nContent-Length: 500\r\n"
                 b"Authorization: Bearer " + CRM_SECRET.encode() + b"\r\n\r\n{\"event_name\": ")
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()

    def gone() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "client disconnected" in r.getMessage()]

    async def logged() -> list[logging.LogRecord]:
        return gone()

    [record] = await eventually(logged, timeout=30, what="the disconnect logged")
    assert record.levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records
                                                                           if r.levelno >= logging.ERROR]


# ------------------------------------------------------------------------------------------------ metric labels


def _label_values(label: str) -> set[str]:
    found = set()
    for metric in REGISTRY.collect():
        if metric.name == "leadwire_ingress_changes_ignored":
            found |= {s.labels[label] for s in metric.samples if s.name.endswith("_total")}
    return found


async def test_metric_labels_from_webhook_content_are_bounded(ingress: Ingress) -> None:
    rng = random.Random(14)
    for _ in range(50):
        fields = ["".join(rng.choices(string.ascii_lowercase, k=12)) for _ in range(40)]
        payload = {"object": rng.choice(["page", "x" + "".join(rng.choices(string.ascii_lowercase, k=8))]),
                   "entry": [{"id": "1", "time": 1, "changes": [{"field": f, "value": {}} for f in fields]}]}
        body = json.dumps(payload).encode()
        status, answer = await ingress.post_meta(body, {"X-Hub-Signature-256": sign(body)})
        assert status == 200, answer
    fields = _label_values("field")
    objects = _label_values("object")
    assert fields <= logic.WEBHOOK_FIELDS | {"other", "messaging", "none"}, fields
    assert "other" in fields
    assert objects <= logic.WEBHOOK_OBJECTS | {"other"}
