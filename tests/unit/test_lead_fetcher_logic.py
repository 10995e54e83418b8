"""Pure logic of the lead fetcher: parsing, windows, error outcomes, and the batch coalescer with a fake client."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.leads import captured_message_id
from services.lead_fetcher.logic import (
    THROTTLE_MAX_DELAY_SECONDS,
    flatten_answers,
    parse_lead,
    parse_meta_time,
    read_failure,
    read_outcome,
    scan_window,
    time_filter,
)
from services.lead_fetcher.reader import LeadReader
from shared.graph import (
    AuthError,
    BatchResult,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    ThrottledError,
    TransientError,
)
from shared.messaging import PermanentError, RetryLater

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_meta_time_with_compact_offset() -> None:
    assert parse_meta_time("2026-11-22T08:49:14+0000") == datetime(2026, 11, 22, 8, 49, 14, tzinfo=UTC)
    assert parse_meta_time("2026-11-22T09:49:14+0100") == datetime(2026, 11, 22, 8, 49, 14, tzinfo=UTC)
    with pytest.raises(ValueError, match="created_time"):
        parse_meta_time(None)


def test_answers_flatten_to_the_first_value() -> None:
    field_data = [{"name": "email", "values": ["a@example.com", "b@example.com"]},
                  {"name": "empty", "values": []}, {"bad": 1}]
    assert flatten_answers(field_data) == {"email": "a@example.com", "empty": None}


def test_parse_lead_keeps_ids_as_strings_and_hides_answers_from_repr() -> None:
    raw = {"id": "123", "created_time": "2026-11-22T08:49:14+0000", "ad_id": 456, "form_id": "789",
           "is_organic": False, "platform": "ig", "field_data": [{"name": "full_name", "values": ["Jane Roe"]}]}
    lead = parse_lead(raw, page_id="42", source="webhook")
    assert (lead.leadgen_id, lead.ad_id, lead.adset_id, lead.platform) == ("123", "456", None, "ig")
    assert lead.fields == {"full_name": "Jane Roe"}
    assert "Jane" not in repr(lead)
    assert lead.captured().leadgen_id == "123"


def test_captured_message_id_is_stable_per_lead() -> None:
    assert captured_message_id("1") == captured_message_id("1")
    assert captured_message_id("1") != captured_message_id("2")


def test_scan_window_initial_overlap_since_and_horizon() -> None:
    overlap = timedelta(minutes=10)
    assert scan_window(None, NOW, overlap=overlap, initial_days=30).since == NOW - timedelta(days=30)
    mark = NOW - timedelta(hours=1)
    assert scan_window(mark, NOW, overlap=overlap, initial_days=30).since == mark - overlap
    since = NOW - timedelta(days=3)
    assert scan_window(mark, NOW, overlap=overlap, initial_days=30, since=since).since == since
    far = NOW - timedelta(days=400)
    assert scan_window(mark, NOW, overlap=overlap, initial_days=30, since=far).since == NOW - timedelta(days=90)
    assert time_filter(NOW) == [{"field": "time_created", "operator": "GREATER_THAN",
                                 "value": int(NOW.timestamp())}]


def test_read_failures_map_to_retry_park_or_backoff() -> None:
    throttled = read_failure(ThrottledError("x", code=80005, retry_after=42.0), "1", access_retry_seconds=300,
                             expired=False)
    assert isinstance(throttled, RetryLater)
    assert throttled.delay == 42.0
    assert not throttled.counts_attempt
    capped = read_failure(ThrottledError("x", retry_after=86400.0), "1", access_retry_seconds=300, expired=False)
    assert isinstance(capped, RetryLater)
    assert capped.delay == THROTTLE_MAX_DELAY_SECONDS
    for error in (NotFoundError("gone", code=100, subcode=33, fbtrace_id="T"), InvalidRequestError("bad", code=100)):
        parked = read_failure(error, "1", access_retry_seconds=300, expired=False)
        assert isinstance(parked, PermanentError)
        assert "code=100" in str(parked)
    for error in (PermissionDeniedError("no", code=200), AuthError("expired", code=190, subcode=463)):
        later = read_failure(error, "1", access_retry_seconds=300, expired=False)
        assert isinstance(later, RetryLater)
        assert later.delay == 300
        assert isinstance(read_failure(error, "1", access_retry_seconds=300, expired=True), PermanentError)
    transient = TransientError("boom", code=2)
    assert read_failure(transient, "1", access_retry_seconds=300, expired=False) is transient


class FakeGraph:
    """Records calls; answers each lead id with an object, or an error for ids in `errors`."""

    def __init__(self, errors: dict[str, Exception] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.gets: list[str] = []
        self.errors = errors or {}

    async def batch(self, requests: list[Any], **_: Any) -> list[BatchResult]:
        self.batches.append([r.path for r in requests])
        await asyncio.sleep(0)
        return [BatchResult(r, code=200, body={"id": r.path}, error=self.errors.get(r.path)) for r in requests]

    async def get(self, path: str, *_: Any, **__: Any) -> dict[str, Any]:
        self.gets.append(path)
        if path in self.errors:
            raise self.errors[path]
        return {"id": path}


def test_read_outcomes_for_the_metric_follow_the_same_classes() -> None:
    assert read_outcome(ThrottledError("x", code=80005)) == "throttled"
    assert read_outcome(NotFoundError("gone", code=100, subcode=33)) == "not_readable"
    assert read_outcome(PermissionDeniedError("no", code=200)) == "access_refused"
    assert read_outcome(AuthError("expired", code=190)) == "access_refused"
    assert read_outcome(TransientError("down", code=2)) == "error"


async def test_concurrent_reads_share_batch_calls_of_at_most_50() -> None:
    graph = FakeGraph(errors={"7": NotFoundError("gone", code=100, subcode=33)})
    reader = LeadReader(graph, "token", window_seconds=0.01)  # type: ignore[arg-type]

    results = await asyncio.gather(*(reader.read(str(i), "p") for i in range(60)), reader.read("55", "p"),
                                   return_exceptions=True)

    assert [len(b) for b in graph.batches] == [50, 10]  # a full batch goes at once; "55" twice is one operation
    assert isinstance(results[7], NotFoundError)
    assert results[55] == results[60] == {"id": "55"}
    assert sum(isinstance(r, dict) for r in results) == 60


async def test_a_lone_read_is_a_plain_get() -> None:
    graph = FakeGraph()
    reader = LeadReader(graph, "token", window_seconds=0.0)  # type: ignore[arg-type]
    assert await reader.read("5", "p") == {"id": "5"}
    assert graph.gets == ["5"]
    assert graph.batches == []


# -- epochs out of range, held capture (issue 14) ---------------------------------------------------------------


@pytest.mark.parametrize("created_time", [1_795_208_645_000, 10**20, 2**63, -(10**20)])
def test_an_implausible_created_time_never_crashes_the_expiry_check(created_time: int) -> None:
    from services.lead_fetcher.logic import lead_is_expired

    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert lead_is_expired(created_time, now) is False
    assert lead_is_expired(int((now - timedelta(days=91)).timestamp()), now) is True


@pytest.mark.parametrize("value", [1e20, 10**20, float("inf"), float("nan")])
def test_an_implausible_numeric_created_time_from_meta_is_a_value_error(value: float) -> None:
    from services.lead_fetcher.logic import parse_meta_time

    with pytest.raises(ValueError, match="plausible"):
        parse_meta_time(value)


def test_held_alert_says_why_and_when() -> None:
    from services.lead_fetcher.logic import HELD_FIX, held_reason, held_summary

    paced = ThrottledError("scope buc:1:leadgen is near its limit", kind="buc", scope="buc:1:leadgen",
                           retry_after=170.0)
    throttled = ThrottledError("(#80005) too many", kind="buc", scope="buc:1:leadgen", code=80005)
    assert "near its limit" in held_reason(paced)
    assert "buc:1:leadgen" in held_reason(paced)
    assert "code 80005" in held_reason(throttled)
    summary = held_summary("1", held_reason(paced), held_seconds=360.0,
                           expected=datetime(2026, 12, 3, 9, 15, tzinfo=UTC))
    assert "Page 1" in summary
    assert "6 min" in summary
    assert "2026-12-03 09:15 UTC" in summary
    assert "leadwire doctor" in HELD_FIX
