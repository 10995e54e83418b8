"""Poison detection (`shared.poison`): header parsing, decoding, and the bisecting write."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from contracts.conversions import ConversionRequested
from contracts.leads import LeadgenReceived
from contracts.messages import ConversionRequestedMessage, LeadgenReceivedMessage
from shared.messaging import Consumed
from shared.poison import (
    MalformedHeaderError,
    PoisonError,
    check_headers,
    decode,
    describe,
    is_poison,
    isolate,
    parse_attempt,
    parse_not_before,
    unstorable,
)
from shared.topology import H_ATTEMPT, H_NOT_BEFORE


@pytest.mark.parametrize(("value", "expected"), [(1, 1), (3, 3), ("2", 2), (b"4", 4)])
def test_attempt_header_as_our_machinery_writes_it(value: object, expected: int) -> None:
    assert parse_attempt(value) == expected


@pytest.mark.parametrize("value", ["x", "", "-1", "1.5", "٣", 0, -2, 2.0, True, None, 10**9, ["1"], b"\xff"])
def test_malformed_attempt_header_raises(value: object) -> None:
    with pytest.raises(MalformedHeaderError, match=H_ATTEMPT):
        parse_attempt(value)


def test_not_before_header() -> None:
    now = time.time()
    assert parse_not_before(None) == 0.0
    assert parse_not_before("") == 0.0
    assert parse_not_before(f"{now + 30:.3f}") == pytest.approx(now + 30, abs=0.001)
    assert parse_not_before(now + 5) == now + 5
    assert parse_not_before(b"12.5") == 12.5


@pytest.mark.parametrize(
    "value", ["abc", "Infinity", "inf", "nan", "NaN", "1e400", "-5", " ", float("inf"), float("nan"), 10**400,
              Decimal("NaN"), True, ["1"], "١٢٣"],
)
def test_malformed_not_before_header_raises(value: object) -> None:
    with pytest.raises(MalformedHeaderError, match=H_NOT_BEFORE):
        parse_not_before(value)


def test_not_before_weeks_ahead_is_not_ours() -> None:
    with pytest.raises(MalformedHeaderError, match="7 days"):
        parse_not_before(time.time() + 30 * 86400)


def test_check_headers_and_a_consumed_message_that_carries_bad_ones() -> None:
    check_headers({})
    check_headers({H_ATTEMPT: 2, H_NOT_BEFORE: f"{time.time():.3f}", "other": "abc"})
    with pytest.raises(MalformedHeaderError):
        check_headers({H_NOT_BEFORE: "abc"})
    with pytest.raises(MalformedHeaderError):
        check_headers({H_ATTEMPT: "x"})
    consumed = Consumed(body=b"{}", headers={H_ATTEMPT: "x"}, routing_key="r")
    assert consumed.attempt == 1  # parking it must not raise again
    with pytest.raises(MalformedHeaderError):
        Consumed(body=b"{}", headers={H_NOT_BEFORE: "abc"}, routing_key="r").wait_left()


def _conversion(**changes: Any) -> dict[str, Any]:
    request = ConversionRequested.model_validate(
        {"event_name": "SignedCase", "event_time": int(time.time()), "user": {"email": "a@example.com"},
         "custom_data": {"value": 10.0, "currency": "USD"}}
    )
    body: dict[str, Any] = json.loads(ConversionRequestedMessage.new(request).model_dump_json())
    body["payload"].update(changes)
    return body


def _raw(body: dict[str, Any], replace: tuple[str, str] | None = None) -> bytes:
    text = json.dumps(body)
    if replace:
        text = text.replace(*replace)
    return text.encode()


def test_a_valid_message_decodes() -> None:
    message = decode(ConversionRequestedMessage, _raw(_conversion()))
    assert message.payload.event_name == "SignedCase"
    # \u escapes of ordinary characters are fine
    assert decode(ConversionRequestedMessage, _raw(_conversion(event_name="Caf\u00e9"))).payload.event_name == "Café"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # Non-finite numbers are refused by the contracts themselves (contracts/values.py), no body scan needed.
        (_raw(_conversion(event_time="1e400"), ('"1e400"', "1e400")), "event_time: .*finite"),
        (_raw(_conversion(event_name="Signed\x00Case")), "event_name: NUL"),
        (_raw(_conversion(event_name="x"), ('"x"', '"\\udc00"')), "invalid"),
        (_raw(_conversion(event_name="x"), ('"x"', '"\\ud800"')), "invalid"),
        (_raw(_conversion(custom_data={"value": "V", "currency": "USD"}), ('"V"', "Infinity")), "value: .*finite"),
        (_raw(_conversion(custom_data={"value": "V", "currency": "USD"}), ('"V"', "1e400")), "value: .*finite"),
        (_raw(_conversion(custom_data={"k": "V"}), ('"V"', "NaN")), "custom_data.k: must be a finite"),
        (_raw(_conversion(custom_data={"k\x00": "v"})), "NUL or lone surrogate in a key"),
        (b'{"not json', "invalid"),
        (b"\x00\xff", "invalid"),
    ],
)
def test_poison_bodies_raise_poison_error_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonError, match=reason) as caught:
        decode(ConversionRequestedMessage, body)
    assert "a@example.com" not in str(caught.value)


def test_an_envelope_with_a_nul_in_a_pattern_field_is_invalid() -> None:
    body = json.loads(LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id="111", page_id="222")).model_dump_json())
    body["payload"]["leadgen_id"] = "111\x00"
    with pytest.raises(PoisonError, match="leadgen_id"):
        decode(LeadgenReceivedMessage, json.dumps(body).encode())


def test_unstorable_finds_the_path() -> None:
    assert unstorable({"a": [1, {"b": float("nan")}]}) == "a[1].b: not a finite number"
    assert unstorable({"a": ("ok", "x\ud800")}) == "a[1]: NUL or lone surrogate in text"
    assert unstorable({"a": Decimal("Infinity")}) == "a: not a finite number"
    assert unstorable({"a": [1.5, "fine", None, True, {"k": Decimal(2)}]}) is None


def test_is_poison_separates_bad_data_from_outages() -> None:
    assert is_poison(PoisonError("x"))
    assert is_poison(OverflowError("cannot convert float infinity to integer"))
    assert is_poison(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    assert is_poison(PydanticSerializationError("x"))
    assert is_poison(asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"))
    assert is_poison(asyncpg.NumericValueOutOfRangeError("out of range"))
    assert not is_poison(ConnectionRefusedError())
    assert not is_poison(TimeoutError())
    assert not is_poison(asyncpg.CannotConnectNowError("starting up"))
    assert not is_poison(RuntimeError("CRM said 500"))


def test_describe_keeps_values_out() -> None:
    class Model(BaseModel):
        n: int

    with pytest.raises(ValidationError) as caught:
        Model.model_validate({"n": "jane@example.com"})
    assert "jane" not in describe(caught.value)
    assert "jane" not in describe(UnicodeEncodeError("utf-8", "jane\ud800", 4, 5, "surrogates not allowed"))
    assert "jane" not in describe(asyncpg.DataError("invalid input: jane"))


async def test_isolate_splits_until_the_bad_items_are_alone() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if any(item % 7 == 3 for item in items):
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00")
        return list(items)

    written, bad = await isolate(list(range(20)), write)
    assert sorted(item for part in written for item in part) == [i for i in range(20) if i % 7 != 3]
    assert [item for item, _ in bad] == [3, 10, 17]
    assert all(isinstance(exc, asyncpg.CharacterNotInRepertoireError) for _, exc in bad)
    assert len(calls) <= 2 * 3 * 5 + 1  # about 2 log2(n) writes per bad item, not one per item


async def test_isolate_writes_a_clean_batch_once_and_raises_an_outage() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> int:
        calls.append(list(items))
        return len(items)

    assert await isolate([1, 2, 3], write) == ([3], [])
    assert calls == [[1, 2, 3]]
    assert await isolate([], write) == ([], [])

    async def down(items: Sequence[int]) -> int:
        raise ConnectionRefusedError("database down")

    with pytest.raises(ConnectionRefusedError):  # not the data's fault: the whole batch retries
        await isolate([1, 2, 3], down)
