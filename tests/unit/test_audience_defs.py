"""Audience definitions (pure): parsing and its refusals, the row a lead becomes, lookalike specs."""

from __future__ import annotations

import pytest

from services.campaign_executor import audience_defs
from services.campaign_executor.audience_defs import AudienceConfigError, parse
from services.campaign_executor.commands.audience_sync import prepare
from shared.meta.customer_data import sha256_hex

GOOD = """
audiences:
  past: {account_id: act_1, leads: {days: 180}, description: exclusion}
  signed: {account_id: act_1, outcomes: [SignedCase], days: 365}
  lal: {account_id: act_1, lookalike: {seed: signed, country: us, ratio: 0.03}}
  lal_multi: {account_id: act_1, lookalike: {seed: signed, countries: [US, ca], ratio: 0.1}}
"""


def test_a_good_file_parses() -> None:
    defs = parse(GOOD)
    assert defs["past"].leads is not None
    assert defs["past"].leads.days == 180
    assert defs["signed"].event_names == ["signedcase"]
    assert defs["signed"].days == 365
    assert defs["lal"].lookalike is not None
    assert defs["lal"].lookalike.spec() == {"ratio": 0.03, "country": "US"}
    assert defs["lal_multi"].lookalike is not None
    assert defs["lal_multi"].lookalike.spec() == {
        "ratio": 0.1, "location_spec": {"geo_locations": {"countries": ["US", "CA"]}}}


@pytest.mark.parametrize(("body", "why"), [
    ("x: {account_id: act_1}", "exactly one of"),
    ("x: {account_id: act_1, leads: {days: 1}, outcomes: [a]}", "exactly one of"),
    ("x: {account_id: '1', leads: {days: 1}}", "account_id"),
    ("x: {account_id: act_1, leads: {days: 1}, days: 3}", "`days` goes with `outcomes`"),
    ("x: {account_id: act_1, lookalike: {seed: nope, country: US, ratio: 0.01}}", "not a customer-file audience"),
    ("s: {account_id: act_1, leads: {days: 9}}\n  x: {account_id: act_1, lookalike: {seed: s, country: US, "
     "ratio: 0.2}}", "ratio"),
    ("s: {account_id: act_1, leads: {days: 9}}\n  x: {account_id: act_1, lookalike: {seed: s, country: US, "
     "ratio: 0.015}}", "steps of 0.01"),
    ("s: {account_id: act_1, leads: {days: 9}}\n  x: {account_id: act_1, lookalike: {seed: s, ratio: 0.01}}",
     "exactly one of country or countries"),
    ("s: {account_id: act_2, leads: {days: 9}}\n  x: {account_id: act_1, lookalike: {seed: s, country: US, "
     "ratio: 0.01}}", "another ad account"),
])
def test_wrong_definitions_are_refused_with_the_reason(body: str, why: str) -> None:
    with pytest.raises(AudienceConfigError, match=why):
        parse(f"audiences:\n  {body}\n")


def test_a_missing_file_is_an_error_and_no_file_is_no_audiences(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert audience_defs.load("") == {}
    with pytest.raises(AudienceConfigError, match="not found"):
        audience_defs.load(tmp_path / "none.yaml")


def test_a_lead_becomes_one_row_in_schema_order_and_rows_without_identifier_are_counted() -> None:
    row = audience_defs.lead_row({"work_email": "A@B.co", "full_name": "Mary Ann Roe", "zip_code": "77001"}, "42")
    assert dict(zip(audience_defs.SCHEMA, row, strict=True)) == {
        "EMAIL": "A@B.co", "PHONE": "", "FN": "Mary", "LN": "Roe", "CT": "", "ST": "", "ZIP": "77001",
        "COUNTRY": "", "EXTERN_ID": "42"}
    rows, dropped = prepare([
        {"leadgen_id": "1", "fields": {"email": ["", "x@y.com"]}},
        {"leadgen_id": "2", "fields": {"first_name": "Solo"}},  # only an EXTERN_ID: matches no one
        {"leadgen_id": "3", "fields": {"first_name": "Jo", "last_name": "Li", "zip_code": "10001"}},
    ], "US")
    assert dropped == 1
    assert set(rows) == {"1", "3"}
    assert rows["1"][0] == sha256_hex("x@y.com")
    assert rows["1"][-1] == "1"
