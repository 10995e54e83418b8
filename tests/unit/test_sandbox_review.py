"""The Graph sandbox's ad review and the delivery of ads created through the API (issue 20): an ad in review,
disapproved or with issues shows that status, even while paused, and delivers nothing; an ad in a new ad set
delivers from its budget like any other, while its ad, ad set and campaign are ACTIVE."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.graph_sandbox import creates, objects, review
from services.graph_sandbox.core import GraphRequest, Sandbox
from services.graph_sandbox.state import MAIN_ACCOUNT, PAGE_ID, Node
from tests.unit.test_sandbox_delivery import at, impressions, sandbox


async def _post(sb: Sandbox, fn: Any, edge: str, **params: Any) -> Node:
    request = GraphRequest("POST", f"{MAIN_ACCOUNT}/{edge}", None,
                           {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}, None, "")
    made = sb.state.get((await fn(sb, request, sb.state.get(MAIN_ACCOUNT)))["id"])
    assert made is not None
    return made


async def _new_adset(sb: Sandbox, *, cbo: int | None = None, budget: int | None = 4000) -> Node:
    campaign = await _post(sb, creates.create_campaign, "campaigns", name="New", objective="OUTCOME_LEADS",
                           special_ad_categories=[], **({"daily_budget": cbo} if cbo else
                                                        {"is_adset_budget_sharing_enabled": "false"}))
    return await _post(sb, creates.create_adset, "adsets", name="New set", campaign_id=campaign.id,
                       billing_event="IMPRESSIONS", optimization_goal="LEAD_GENERATION",
                       targeting={"geo_locations": {"countries": ["US"]}}, promoted_object={"page_id": PAGE_ID},
                       **({"daily_budget": budget} if budget else {}))


async def _new_ad(sb: Sandbox, adset: Node, creative: str, status: str = "ACTIVE") -> Node:
    return await _post(sb, creates.create_ad, "ads", name="New ad", adset_id=adset.id, status=status,
                       creative={"creative_id": creative})


@pytest.mark.parametrize("cbo", [False, True])
async def test_an_ad_in_a_new_ad_set_delivers_from_its_budget(cbo: bool) -> None:
    sb, _, active = sandbox()
    at(sb, 9)
    adset = await _new_adset(sb, cbo=8000 if cbo else None, budget=None if cbo else 4000)
    ad = await _new_ad(sb, adset, active.fields["creative"]["id"])
    at(sb, 15)
    assert impressions(sb, ad) > 0, "a new ad set's ad delivers"
    assert impressions(sb, ad, 1) == 0, "nothing before it was created"
    objects.apply_update(sb, adset if not cbo else sb.state.get(adset.fields["campaign_id"]), {"status": "PAUSED"})
    at(sb, 16)
    stopped = impressions(sb, ad)
    at(sb, 20)
    assert impressions(sb, ad) == stopped, "paused ad set or campaign: no more delivery"


async def test_a_bigger_budget_delivers_more_and_a_paused_new_ad_nothing() -> None:
    sb, _, active = sandbox()
    at(sb, 9)
    small, big = await _new_adset(sb, budget=2000), await _new_adset(sb, budget=8000)
    creative = active.fields["creative"]["id"]
    small_ad, big_ad = await _new_ad(sb, small, creative), await _new_ad(sb, big, creative)
    paused = await _new_ad(sb, big, creative, status="PAUSED")
    at(sb, 21)
    assert impressions(sb, big_ad) > 2 * impressions(sb, small_ad) > 0
    assert impressions(sb, paused) == 0


@pytest.mark.parametrize("state", review.REVIEW_STATES)
async def test_an_ad_under_review_shows_it_and_does_not_deliver(state: str) -> None:
    sb, paused, active = sandbox()
    at(sb, 10)
    review.set_review(sb, active, state)
    review.set_review(sb, paused, state)
    view, paused_view = objects.full_view(sb, active), objects.full_view(sb, paused)
    assert (view["effective_status"], view["configured_status"]) == (state, "ACTIVE")
    assert (paused_view["effective_status"], paused_view["configured_status"]) == (state, "PAUSED"), \
        "the review state comes before the ad's own PAUSED"
    if state == "DISAPPROVED":
        assert view["ad_review_feedback"]["global"]
    if state == "WITH_ISSUES":
        assert view["issues_info"][0]["level"] == "AD"
    at(sb, 11)
    held = impressions(sb, active)
    assert held > 0, "it delivered until 10:00"
    at(sb, 15)
    assert impressions(sb, active) == held, "nothing while under review"
    review.set_review(sb, active, "APPROVED")
    assert objects.full_view(sb, active)["effective_status"] == "ACTIVE"
    assert "ad_review_feedback" not in objects.full_view(sb, active)
    at(sb, 19)
    assert impressions(sb, active) > held, "approved: it delivers again"


def test_only_ads_are_reviewed_and_only_with_meta_states() -> None:
    sb, _, active = sandbox()
    adset = sb.state.get(active.fields["adset_id"])
    assert adset is not None
    with pytest.raises(ValueError, match="only ads"):
        review.set_review(sb, adset, "DISAPPROVED")
    with pytest.raises(ValueError, match="must be one of"):
        review.set_review(sb, active, "REJECTED")


async def test_a_new_ad_is_in_review_for_an_hour_then_approved_and_delivers() -> None:
    sb, _, active = sandbox()
    at(sb, 9)
    adset = await _new_adset(sb)
    ad = await _new_ad(sb, adset, active.fields["creative"]["id"])
    at(sb, 9, 59)
    assert objects.full_view(sb, ad)["effective_status"] == "PENDING_REVIEW"
    assert impressions(sb, ad) == 0, "nothing while in review"
    at(sb, 10, 1)
    assert objects.full_view(sb, ad)["effective_status"] == "ACTIVE"
    at(sb, 14)
    assert impressions(sb, ad) > 0
    sb.state.review_seconds = 0
    assert objects.full_view(sb, await _new_ad(sb, adset, active.fields["creative"]["id"]))["effective_status"] == (
        "ACTIVE")


async def test_a_refusal_during_the_review_replaces_the_scheduled_approval() -> None:
    sb, _, active = sandbox()
    at(sb, 9)
    ad = await _new_ad(sb, await _new_adset(sb), active.fields["creative"]["id"])
    at(sb, 9, 30)
    review.set_review(sb, ad, "DISAPPROVED")
    at(sb, 15)
    assert objects.full_view(sb, ad)["effective_status"] == "DISAPPROVED"
    assert impressions(sb, ad) == 0
