"""Plain logic of the insights poller: lead counting, money, windows, report-run splitting, row parsing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from services.insights_poller.logic import (
    Slice,
    Window,
    action_map,
    count_leads,
    currency_offset,
    full_refresh_due,
    is_full,
    major_to_minor,
    minor_or_none,
    parse_insight_row,
    parse_meta_time,
    split_slice,
    trailing_window,
)


def test_lead_already_includes_its_components() -> None:
    actions = action_map([
        {"action_type": "lead", "value": "7"},
        {"action_type": "onsite_conversion.lead_grouped", "value": "5"},
        {"action_type": "leadgen_grouped", "value": "5"},
        {"action_type": "offsite_conversion.fb_pixel_lead", "value": "2"},
        {"action_type": "link_click", "value": "40"},
    ])
    assert count_leads(actions) == 7


def test_components_are_summed_only_without_lead() -> None:
    both_names = action_map([
        {"action_type": "onsite_conversion.lead_grouped", "value": "5"},
        {"action_type": "leadgen_grouped", "value": "5"},  # the same on-Meta leads under another name
        {"action_type": "offsite_conversion.fb_pixel_lead", "value": "2"},
    ])
    assert count_leads(both_names) == 7
    assert count_leads(action_map([{"action_type": "leadgen_grouped", "value": "3"}])) == 3
    assert count_leads(action_map([{"action_type": "offsite_conversion.fb_pixel_lead", "value": "1"}])) == 1
    assert count_leads(action_map([{"action_type": "link_click", "value": "9"}])) == 0
    assert count_leads({}) == 0


def test_action_map_tolerates_odd_shapes() -> None:
    assert action_map(None) == {}
    assert action_map([{"action_type": "lead"}, "x", {"value": "1"}, {"action_type": "lead", "value": "2"}]) == {
        "lead": Decimal(2)
    }


@pytest.mark.parametrize(
    ("currency", "spend", "minor"),
    [("USD", "12.34", 1234), ("USD", "0.005", 1), ("EUR", "100", 10000), ("JPY", "1234", 1234),
     ("TWD", "99", 99), ("HUF", "5000", 5000), ("KRW", "1500.4", 1500), ("USD", None, 0), ("USD", "", 0)],
)
def test_insights_money_to_minor_units(currency: str, spend: str | None, minor: int) -> None:
    assert major_to_minor(spend, currency_offset(currency)) == minor


def test_object_money_is_already_minor_units() -> None:
    assert minor_or_none("15000") == 15000
    assert minor_or_none("0") is None
    assert minor_or_none(None) is None


def test_windows() -> None:
    today = date(2026, 11, 22)
    assert trailing_window(today, 3) == Window(date(2026, 11, 20), today)
    assert trailing_window(today, 28).days == 28
    assert is_full(trailing_window(today, 28), today, 28)
    assert not is_full(trailing_window(today, 3), today, 28)
    assert is_full(Window(date(2026, 10, 1), today), today, 28)  # an operator's wider window counts too
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    assert full_refresh_due(None, now, 86400)
    assert not full_refresh_due(now - timedelta(hours=23), now, 86400)
    assert full_refresh_due(now - timedelta(hours=24), now, 86400)


def test_split_halves_campaigns_then_dates() -> None:
    window = Window(date(2026, 11, 1), date(2026, 11, 28))
    whole = Slice(window)
    halves = split_slice(whole, ["3", "1", "2", "4", "2"])
    assert halves == [Slice(window, ("1", "2")), Slice(window, ("3", "4"))]
    assert split_slice(halves[0]) == [Slice(window, ("1",)), Slice(window, ("2",))]
    dates = split_slice(Slice(window, ("1",)))
    assert dates == [Slice(Window(date(2026, 11, 1), date(2026, 11, 14)), ("1",)),
                     Slice(Window(date(2026, 11, 15), date(2026, 11, 28)), ("1",))]
    assert split_slice(Slice(Window(date(2026, 11, 1), date(2026, 11, 1)), ("1",))) == []


def test_split_of_whole_account_with_one_or_no_campaign_goes_to_dates() -> None:
    window = Window(date(2026, 11, 1), date(2026, 11, 3))
    assert split_slice(Slice(window), ["9"]) == [Slice(Window(window.since, window.since), ("9",)),
                                                 Slice(Window(date(2026, 11, 2), window.until), ("9",))]
    assert split_slice(Slice(window), []) == [Slice(Window(window.since, window.since)),
                                              Slice(Window(date(2026, 11, 2), window.until))]


def test_split_pieces_cover_the_slice_exactly() -> None:
    window = Window(date(2026, 11, 1), date(2026, 11, 7))
    ids = tuple(str(i) for i in range(7))
    pending, leaves = [Slice(window, ids)], []
    while pending:
        piece = pending.pop()
        children = split_slice(piece)
        if children:
            pending.extend(children)
        else:
            leaves.append(piece)
    cells = [(c, piece.window.since + timedelta(days=d))
             for piece in leaves for c in piece.campaign_ids or () for d in range(piece.window.days)]
    assert sorted(cells) == sorted((c, window.since + timedelta(days=d)) for c in ids for d in range(7))


def test_filtering_names_the_campaigns() -> None:
    window = Window(date(2026, 11, 1), date(2026, 11, 2))
    assert Slice(window).filtering() is None
    assert Slice(window, ("1", "2")).filtering() == [{"field": "campaign.id", "operator": "IN", "value": ["1", "2"]}]


def test_parse_insight_row() -> None:
    row = parse_insight_row({
        "account_id": "1", "campaign_id": "c1", "campaign_name": "C", "adset_id": "s1", "adset_name": "S",
        "ad_id": "a1", "ad_name": "A", "date_start": "2026-11-20", "date_stop": "2026-11-20",
        "account_currency": "USD", "spend": "45.67", "impressions": "3000", "reach": "2500", "clicks": "40",
        "ctr": "1.333333", "cpc": "1.141750", "cpm": "15.223333", "frequency": "1.2",
        "actions": [{"action_type": "lead", "value": "3"}, {"action_type": "offsite_conversion.fb_pixel_lead",
                                                            "value": "1"}],
        "action_values": [{"action_type": "offsite_conversion.fb_pixel_lead", "value": "25.00"}],
        "cost_per_action_type": [{"action_type": "lead", "value": "15.223333"}],
    }, "USD")
    assert (row.ad_id, row.day, row.spend_minor, row.leads, row.impressions) == (
        "a1", date(2026, 11, 20), 4567, 3, 3000)
    assert row.action_values == {"offsite_conversion.fb_pixel_lead": 2500}
    assert row.cpc == Decimal("1.141750")
    with pytest.raises(ValueError, match="ad_id"):
        parse_insight_row({"date_start": "2026-11-20"}, "USD")


def test_parse_meta_time() -> None:
    assert parse_meta_time("2026-11-22T08:49:14+0000") == datetime(2026, 11, 22, 8, 49, 14, tzinfo=UTC)
    assert parse_meta_time(None) is None
    assert parse_meta_time("garbage") is None
