"""Fidelity: Meta's official `facebook_business` SDK must parse every sandbox answer.

The SDK is synchronous (`requests`), and the sandbox runs in the test's event loop, so each SDK session runs in
a worker thread via `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adcreative import AdCreative
from facebook_business.adobjects.adreportrun import AdReportRun
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.adsinsights import AdsInsights
from facebook_business.adobjects.adspixel import AdsPixel
from facebook_business.adobjects.campaign import Campaign
from facebook_business.adobjects.customaudience import CustomAudience
from facebook_business.adobjects.lead import Lead
from facebook_business.adobjects.leadgenform import LeadgenForm
from facebook_business.adobjects.page import Page
from facebook_business.adobjects.serverside.action_source import ActionSource
from facebook_business.adobjects.serverside.event import Event
from facebook_business.adobjects.serverside.event_request import EventRequest
from facebook_business.adobjects.serverside.user_data import UserData
from facebook_business.api import FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession

from tests.fixtures.sandbox import SandboxHandle

T = TypeVar("T")


def make_api(sandbox: SandboxHandle, *, with_secret: bool = True, token: str | None = None) -> FacebookAdsApi:
    session = FacebookSession(
        access_token=token or sandbox.token, app_secret=sandbox.app_secret if with_secret else None, timeout=10
    )
    session.GRAPH = sandbox.url  # point this session (not the class) at the sandbox
    return FacebookAdsApi(session, api_version=sandbox.version)


async def run(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


async def test_sdk_lists_campaigns_across_cursor_pages(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)

    def list_campaigns() -> list[Campaign]:
        account = AdAccount(sandbox.account_id, api=api)
        fields = [
            Campaign.Field.name,
            Campaign.Field.objective,
            Campaign.Field.effective_status,
            Campaign.Field.daily_budget,
        ]
        return list(account.get_campaigns(fields=fields, params={"limit": 1}))

    await sandbox.reset_calls()
    campaigns = await run(list_campaigns)
    assert {c[Campaign.Field.name] for c in campaigns} == {
        "Leads - Prospecting",
        "Leads - Retargeting (CBO)",
        "Traffic - Blog (paused)",
    }
    cbo = next(c for c in campaigns if c[Campaign.Field.name].endswith("(CBO)"))
    assert cbo[Campaign.Field.daily_budget] == "15000"
    calls = await sandbox.calls()
    assert calls["by_path"]["GET /act_1000000001/campaigns"] == 3  # one call per page


def create_campaign_and_ad_set(
    account: AdAccount, page_id: str, campaign_name: str, adset_name: str, adset_status: str, **campaign: Any
) -> tuple[Campaign, AdSet]:
    """A paused lead-generation campaign (with `campaign`'s further fields) and one ad set in it, through the
    SDK's own create methods, with the params leadwire's executor writes."""
    created = account.create_campaign(
        params={
            Campaign.Field.name: campaign_name,
            Campaign.Field.objective: Campaign.Objective.outcome_leads,
            Campaign.Field.status: Campaign.Status.paused,
            Campaign.Field.special_ad_categories: [],
            Campaign.Field.is_adset_budget_sharing_enabled: False,
            **campaign,
        }
    )
    adset = account.create_ad_set(
        params={
            AdSet.Field.name: adset_name,
            AdSet.Field.campaign_id: created.get_id(),
            AdSet.Field.daily_budget: 2500,
            AdSet.Field.billing_event: AdSet.BillingEvent.impressions,
            AdSet.Field.optimization_goal: AdSet.OptimizationGoal.lead_generation,
            AdSet.Field.targeting: {"geo_locations": {"countries": ["US"]}},
            AdSet.Field.promoted_object: {"page_id": page_id},
            AdSet.Field.status: adset_status,
        }
    )
    return created, adset


async def test_sdk_creates_and_updates_objects(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    page_id = sandbox.state["page_id"]

    def build() -> dict[str, Any]:
        account = AdAccount(sandbox.account_id, api=api)
        _, adset = create_campaign_and_ad_set(account, page_id, "SDK campaign", "SDK ad set", AdSet.Status.active)
        creative = account.create_ad_creative(
            params={
                "name": "SDK creative",
                "object_story_spec": {
                    "page_id": page_id,
                    "link_data": {
                        "message": "hi",
                        "link": "https://example.com",
                        "call_to_action": {
                            "type": "SIGN_UP",
                            "value": {"lead_gen_form_id": sandbox.state["form_ids"][0]},
                        },
                    },
                },
            }
        )
        ad = account.create_ad(
            params={
                "name": "SDK ad",
                "adset_id": adset.get_id(),
                "creative": {"creative_id": creative.get_id()},
                "status": "ACTIVE",
            }
        )
        AdSet(adset.get_id(), api=api).api_update(params={AdSet.Field.daily_budget: 3000})
        read = AdSet(adset.get_id(), api=api).api_get(
            fields=[AdSet.Field.daily_budget, AdSet.Field.effective_status, AdSet.Field.name]
        )
        ad_read = ad.api_get(fields=["effective_status", "adset_id"])
        return {"adset": dict(read), "ad": dict(ad_read)}

    await sandbox.control("POST", "review", {"review_seconds": 0})  # approved at once: the parents' status shows
    result = await run(build)
    assert result["adset"]["daily_budget"] == "3000"
    assert result["adset"]["effective_status"] == "CAMPAIGN_PAUSED"
    assert result["ad"]["effective_status"] == "CAMPAIGN_PAUSED"


async def test_sdk_surfaces_meta_errors(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)

    def legacy_objective() -> None:
        AdAccount(sandbox.account_id, api=api).create_campaign(
            params={
                "name": "old",
                "objective": "LINK_CLICKS",
                "special_ad_categories": [],
                "status": "PAUSED",
                "is_adset_budget_sharing_enabled": False,
            }
        )

    with pytest.raises(FacebookRequestError) as exc:
        await run(legacy_objective)
    assert exc.value.api_error_code() == 100
    assert exc.value.http_status() == 400

    with pytest.raises(FacebookRequestError) as exc:
        await run(lambda: Campaign("123456", api=api).api_get(fields=["name"]))
    assert (exc.value.api_error_code(), exc.value.api_error_subcode()) == (100, 33)

    # The rejected create above already used one ads_management call on this account.
    await sandbox.limits(buc={"ads_management": {"budget": 2, "window_seconds": 60}})
    await run(lambda: AdAccount(sandbox.account_id, api=api).api_get(fields=["name"]))
    with pytest.raises(FacebookRequestError) as exc:
        await run(lambda: AdAccount(sandbox.account_id, api=api).api_get(fields=["name"]))
    assert exc.value.api_error_code() == 80004
    assert exc.value.api_transient_error() is True
    assert "x-business-use-case-usage" in {k.lower() for k in exc.value.http_headers()}


async def test_sdk_reads_sync_and_async_insights(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    fields = ["campaign_id", "campaign_name", "spend", "impressions", "actions", "cost_per_action_type"]

    def sync_insights() -> list[dict[str, Any]]:
        cursor = AdAccount(sandbox.account_id, api=api).get_insights(
            fields=fields, params={"level": "campaign", "date_preset": "last_7d", "time_increment": 1, "limit": 5}
        )
        return [dict(row) for row in cursor]

    def async_insights() -> tuple[int, list[dict[str, Any]]]:
        job = AdAccount(sandbox.account_id, api=api).get_insights(
            fields=fields, params={"level": "campaign", "date_preset": "last_7d", "time_increment": 1}, is_async=True
        )
        polls = 0
        while True:
            job = job.api_get()
            polls += 1
            if (
                job[AdReportRun.Field.async_status] == "Job Completed"
                and job[AdReportRun.Field.async_percent_completion] == 100
            ):
                break
            assert polls < 20
        return polls, [dict(row) for row in job.get_result(params={"limit": 4})]

    sync_rows = await run(sync_insights)
    polls, async_rows = await run(async_insights)
    assert len(sync_rows) == 14  # 2 delivering campaigns x 7 days (the paused one stopped 10 days ago)
    assert polls >= 3
    assert sorted(async_rows, key=lambda r: (r["campaign_id"], r["date_start"])) == sorted(
        sync_rows, key=lambda r: (r["campaign_id"], r["date_start"])
    )


async def test_sdk_reads_leads_and_forms(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox, token=sandbox.page_token)  # Meta lists a Page's forms only with its Page token
    lead_ids = await sandbox.create_leads(count=3, deliver=False)
    since = int(time.time()) - 60

    def read() -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
        forms = list(Page(sandbox.state["page_id"], api=api).get_lead_gen_forms(fields=["name", "status"]))
        form = LeadgenForm(sandbox.state["form_ids"][0], api=api)
        fresh = [
            dict(lead)
            for lead in form.get_leads(
                fields=["id", "created_time", "field_data", "ad_id", "form_id"],
                params={
                    "filtering": [{"field": "time_created", "operator": "GREATER_THAN", "value": since}],
                    "limit": 2,
                },
            )
        ]
        one = Lead(lead_ids[0], api=api).api_get(
            fields=[
                "id",
                "created_time",
                "field_data",
                "ad_id",
                "adset_id",
                "campaign_id",
                "form_id",
                "is_organic",
                "platform",
                "custom_disclaimer_responses",
            ]
        )
        return fresh, dict(one), [f["name"] for f in forms]

    fresh, one, form_names = await run(read)
    assert form_names == ["Contact us", "Get a quote"]
    assert {lead["id"] for lead in fresh} == set(lead_ids)
    assert one["created_time"].endswith("+0000")
    assert {f["name"] for f in one["field_data"]} >= {"full_name", "email", "phone_number"}


async def test_sdk_sends_capi_events(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox, with_secret=False)
    pixel = sandbox.state["pixel_id"]

    def send() -> Any:
        user = UserData(emails=["mary@example.com"], phones=["15559876543"], lead_id="880000000000123")
        event = Event(
            event_name="Lead",
            event_time=int(time.time()),
            user_data=user,
            action_source=ActionSource.SYSTEM_GENERATED,
            custom_data=None,
        )
        previous = FacebookAdsApi.get_default_api()
        FacebookAdsApi.set_default_api(api)  # EventRequest.execute() uses the default API object
        try:
            return EventRequest(pixel_id=pixel, events=[event, event], test_event_code="TEST123").execute()
        finally:
            FacebookAdsApi.set_default_api(previous)

    response = await run(send)
    assert response.events_received == 2
    stored = await sandbox.capi_events(pixel)
    assert stored["requests"] == 1
    assert stored["events"][0]["event"]["user_data"]["em"] == [hashlib.sha256(b"mary@example.com").hexdigest()]


async def test_sdk_batch_with_failures(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    campaign_ids = sandbox.state["accounts"][sandbox.account_id]["campaigns"]

    def run_batch() -> tuple[dict[str, Any], list[int]]:
        ok: dict[str, Any] = {}
        failed: list[int] = []
        batch = api.new_batch()
        for cid in [*campaign_ids, "424242"]:
            Campaign(cid, api=api).api_get(
                fields=["name", "status"],
                batch=batch,
                success=lambda r: ok.__setitem__(r.json()["id"], r.json()),
                failure=lambda r: failed.append(r.error().api_error_code()),
            )
        retry = batch.execute()
        assert retry is None
        return ok, failed

    ok, failed = await run(run_batch)
    assert set(ok) == set(campaign_ids)
    assert failed == [100]
    calls = await sandbox.calls()
    assert calls["total"] == 4  # every batch item is a call


async def test_sdk_batch_retries_null_items(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    ids = sandbox.state["accounts"][sandbox.account_id]["adsets"]
    await sandbox.faults(batch_null_rate=0.5)

    def run_batch() -> tuple[set[str], int]:
        got: set[str] = set()
        batch = api.new_batch()
        for aid in ids:
            AdSet(aid, api=api).api_get(fields=["name"], batch=batch, success=lambda r: got.add(r.json()["id"]))
        rounds = 0
        while batch is not None:
            rounds += 1
            batch = batch.execute()
            assert rounds < 30
        return got, rounds

    got, rounds = await run(run_batch)
    assert got == set(ids)
    assert rounds > 1


async def test_sdk_custom_audience_upload(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)

    def upload() -> dict[str, Any]:
        audience = AdAccount(sandbox.account_id, api=api).create_custom_audience(
            params={"name": "Qualified leads", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}
        )
        response: FacebookResponse = CustomAudience(audience.get_id(), api=api).add_users(
            schema=CustomAudience.Schema.email_hash, users=["a@example.com", "b@example.com"]
        )
        return response.json()

    body = await run(upload)
    assert body["num_received"] == 2
    assert body["num_invalid_entries"] == 0


# ---------------------------------------------------------------------- strictness: the SDK's schema, Meta's errors

# The node types leadwire touches, with one seeded object of each (resolved from the sandbox state).
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "datetime": (str,),
    "int": (int,),
    "unsigned int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def _json_type_ok(declared: str, value: Any) -> bool:
    if declared.startswith("list"):
        return isinstance(value, list)
    expected = JSON_TYPES.get(declared)
    if expected is None:  # enums come as strings, objects and maps as JSON objects
        return isinstance(value, str | dict | list)
    return isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)


async def _seeded_objects(sandbox: SandboxHandle) -> dict[type, str]:
    acc = sandbox.state["accounts"][sandbox.account_id]
    lead = (await sandbox.create_leads(count=1, deliver=False))[0]
    status, _, creatives = await sandbox.graph("GET", f"{sandbox.account_id}/adcreatives", fields="id", limit=1)
    assert status == 200
    return {
        AdAccount: sandbox.account_id,
        Campaign: acc["campaigns"][0],
        AdSet: sandbox.state["adsets_by_name"]["Prospecting - Lookalike"],
        Ad: acc["ads"][0],
        AdCreative: creatives["data"][0]["id"],
        Page: sandbox.state["page_id"],
        LeadgenForm: sandbox.state["form_ids"][0],
        Lead: lead,
        AdsPixel: sandbox.state["pixel_id"],
    }


async def test_sdk_reads_every_declared_field_with_the_declared_json_type(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    objects = await _seeded_objects(sandbox)

    def read_all() -> dict[str, dict[str, Any]]:
        out = {}
        for cls, object_id in objects.items():
            fields = sorted(cls._field_types)
            out[cls.__name__] = api.call("GET", (object_id,), params={"fields": ",".join(fields)}).json()
            cls(object_id, api=api).api_get(fields=fields)  # and the SDK's own object parses it
        return out

    bodies = await run(read_all)
    for cls, body in ((c, bodies[c.__name__]) for c in objects):
        assert body["id"] == objects[cls]
        for name, value in body.items():
            declared = cls._field_types[name]
            assert _json_type_ok(declared, value), f"{cls.__name__}.{name}: {value!r} is not {declared}"
    assert isinstance(bodies["AdSet"]["daily_budget"], str), "money is a numeric string"
    assert isinstance(bodies["AdAccount"]["min_daily_budget"], int)
    assert isinstance(bodies["AdAccount"]["account_status"], int)


async def test_sdk_bid_amount_is_an_unsigned_int_and_budgets_strings(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    adset_id = sandbox.state["adsets_by_name"]["Prospecting - Broad"]

    def update_and_read() -> dict[str, Any]:
        AdSet(adset_id, api=api).api_update(
            params={AdSet.Field.bid_strategy: AdSet.BidStrategy.lowest_cost_with_bid_cap, AdSet.Field.bid_amount: 350}
        )
        return api.call("GET", (adset_id,), params={"fields": "bid_amount,daily_budget,bid_strategy"}).json()

    body = await run(update_and_read)
    assert body["bid_amount"] == 350
    assert isinstance(body["daily_budget"], str)
    assert body["bid_strategy"] == "LOWEST_COST_WITH_BID_CAP"


async def test_sdk_gets_meta_error_for_nonexisting_fields(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    adset_id = sandbox.state["adsets_by_name"]["Prospecting - Broad"]
    ad_id = sandbox.state["accounts"][sandbox.account_id]["ads"][0]

    cases = [
        ((adset_id,), "id,nonsense", "(#100) Tried accessing nonexisting field (nonsense) on node type (AdSet)"),
        # Ads have no budget: leadwire asked for these on every ad command until the sandbox was strict.
        ((ad_id,), "id,daily_budget", "(#100) Tried accessing nonexisting field (daily_budget) on node type (Ad)"),
        ((sandbox.account_id, "campaigns"), "name,bogus", "(#100) Tried accessing nonexisting field (bogus) on node "
         "type (Campaign)"),
        ((adset_id, "insights"), "spend,leads", "(#100) Tried accessing nonexisting field (leads) on node type "
         "(AdsInsights)"),
    ]
    for path, fields, message in cases:
        with pytest.raises(FacebookRequestError) as exc:
            await run(lambda path=path, fields=fields: api.call("GET", path, params={"fields": fields}))
        assert exc.value.api_error_code() == 100
        assert exc.value.api_error_type() == "OAuthException"
        assert exc.value.api_error_message() == message


async def test_sdk_gets_meta_error_for_unknown_mistyped_and_enum_params(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    adset_id = sandbox.state["adsets_by_name"]["Prospecting - Broad"]
    campaign_id = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]
    cases: list[tuple[tuple[str, ...], str, dict[str, Any], str]] = [
        ((adset_id,), "POST", {"nonsense": 1}, "nonsense"),
        ((adset_id,), "POST", {"daily_budget": "ten dollars"}, "daily_budget"),
        ((adset_id,), "POST", {"bid_amount": -5}, "bid_amount"),
        ((adset_id,), "POST", {"optimization_goal": "MORE_LEADS"}, "optimization_goal"),
        ((campaign_id,), "POST", {"status": "RUNNING"}, "status"),
        ((campaign_id,), "POST", {"is_adset_budget_sharing_enabled": "maybe"}, "is_adset_budget_sharing_enabled"),
        ((sandbox.account_id, "campaigns"), "GET", {"effective_status": ["SOMETIMES"]}, "effective_status"),
        ((sandbox.account_id, "insights"), "GET", {"date_preset": "last_2_fortnights"}, "date_preset"),
        ((sandbox.state["page_id"], "subscribed_apps"), "POST", {"subscribed_fields": ["leadgen", "gossip"]},
         "subscribed_fields"),
    ]
    for path, method, params, blamed in cases:
        with pytest.raises(FacebookRequestError) as exc:
            await run(lambda path=path, method=method, params=params: api.call(method, path, params=params))
        assert exc.value.api_error_code() == 100, (path, params)
        assert blamed in exc.value.api_error_message(), exc.value.api_error_message()
        assert exc.value.api_blame_field_specs() == [[blamed]]
    node = await run(lambda: api.call("GET", (adset_id,), params={"fields": "daily_budget,status"}).json())
    assert node["status"] == "ACTIVE", "no rejected write changed anything"


async def test_sdk_retired_marketing_api_version_fails_graph_api_falls_forward(sandbox: SandboxHandle) -> None:
    assert (await sandbox.control("GET", "versions")) == {"latest": "v26.0", "oldest": "v25.0", "auto_upgrade": False}
    old = make_api(sandbox)
    old._api_version = "v24.0"  # expired 2026-10-06 for the Marketing API
    campaign_id = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]

    with pytest.raises(FacebookRequestError) as exc:
        await run(lambda: Campaign(campaign_id, api=old).api_get(fields=["name"]))
    assert exc.value.api_error_code() == 2635
    assert "v26.0" in exc.value.api_error_message()
    # Pages and lead forms are Graph API: a version lives two years there.
    page_api = make_api(sandbox, token=sandbox.page_token)  # listing forms takes the Page token
    page_api._api_version = "v24.0"
    forms = await run(lambda: list(Page(sandbox.state["page_id"], api=page_api).get_lead_gen_forms(fields=["name"])))
    assert len(forms) == 2
    current = make_api(sandbox)
    current._api_version = "v25.0"
    assert (await run(lambda: Campaign(campaign_id, api=current).api_get(fields=["name"])))["name"]

    await sandbox.versions(auto_upgrade=True)
    response = await run(lambda: old.call("GET", (campaign_id,), params={"fields": "name"}))
    assert "v24.0" in response.headers()["X-Ad-Api-Version-Warning"]


async def test_sdk_meets_meta_limits(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    adset_id = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    campaign_id = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]

    # Minimum daily budget: the account's min_daily_budget (100 = $1.00).
    account = await run(lambda: AdAccount(sandbox.account_id, api=api).api_get(fields=["min_daily_budget"]))
    assert account["min_daily_budget"] == 100

    def create_cheap_adset() -> None:
        AdAccount(sandbox.account_id, api=api).create_ad_set(
            params={
                AdSet.Field.name: "too cheap",
                AdSet.Field.campaign_id: campaign_id,
                AdSet.Field.daily_budget: 99,
                AdSet.Field.billing_event: AdSet.BillingEvent.impressions,
                AdSet.Field.optimization_goal: AdSet.OptimizationGoal.lead_generation,
                AdSet.Field.targeting: {"geo_locations": {"countries": ["US"]}},
                AdSet.Field.promoted_object: {"page_id": sandbox.state["page_id"]},
            }
        )

    with pytest.raises(FacebookRequestError) as exc:
        await run(create_cheap_adset)
    assert (exc.value.api_error_code(), exc.value.api_error_subcode()) == (100, 1885272)

    # 4 budget changes per ad set per hour, counting an edit made in Ads Manager.
    await sandbox.edit_object(adset_id, daily_budget=7100)
    for budget in (7200, 7300, 7400):
        await run(lambda budget=budget: AdSet(adset_id, api=api).api_update(params={"daily_budget": budget}))
    with pytest.raises(FacebookRequestError) as exc:
        await run(lambda: AdSet(adset_id, api=api).api_update(params={"daily_budget": 7500}))
    assert (exc.value.api_error_code(), exc.value.api_error_subcode()) == (613, 1487632)
    with pytest.raises(AssertionError, match="4 times per hour"):
        await sandbox.edit_object(adset_id, daily_budget=7600)  # Ads Manager says no as well

    # 50 operations per batch.
    def oversized_batch() -> None:
        batch = api.new_batch()
        for _ in range(51):
            Campaign(campaign_id, api=api).api_get(fields=["name"], batch=batch)
        batch.execute()

    with pytest.raises(FacebookRequestError) as exc:
        await run(oversized_batch)
    assert exc.value.api_error_code() == 100
    assert "50" in exc.value.api_error_message()

    # 1,000 events per Conversions API request.
    def capi_1001() -> None:
        event = {"event_name": "Lead", "event_time": int(time.time()), "action_source": "system_generated",
                 "user_data": {"lead_id": "880000000000123"}}
        api.call("POST", (sandbox.state["pixel_id"], "events"), params={"data": [event] * 1001})

    with pytest.raises(FacebookRequestError) as exc:
        await run(capi_1001)
    assert exc.value.api_error_code() == 100

    # 10,000 rows per audience upload.
    def upload_10001() -> None:
        audience = AdAccount(sandbox.account_id, api=api).create_custom_audience(
            params={"name": "Big", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}
        )
        CustomAudience(audience.get_id(), api=api).add_users(
            schema=CustomAudience.Schema.email_hash, users=[f"{i}@example.com" for i in range(10_001)]
        )

    with pytest.raises(FacebookRequestError) as exc:
        await run(upload_10001)
    assert exc.value.api_error_code() == 100


async def test_sdk_writes_every_param_leadwire_writes(sandbox: SandboxHandle) -> None:
    """The params leadwire's integration suite sends (see GET /_sandbox/calls/signatures), through the SDK's
    own methods: the sandbox refuses params the SDK does not declare, and the SDK's TypeChecker warns (an error
    under pytest) on a value of the wrong type."""
    api = make_api(sandbox)
    page_id = sandbox.state["page_id"]
    sha = hashlib.sha256(b"mary@example.com").hexdigest()

    def write() -> dict[str, Any]:
        account = AdAccount(sandbox.account_id, api=api)
        campaign, adset = create_campaign_and_ad_set(account, page_id, "SDK writes", "SDK writes", AdSet.Status.paused,
                                                     buying_type="AUCTION")
        AdSet(adset.get_id(), api=api).api_update(params={AdSet.Field.status: AdSet.Status.active})
        AdSet(adset.get_id(), api=api).api_update(params={AdSet.Field.daily_budget: 2600})
        audience = account.create_custom_audience(
            params={"name": "SDK writes", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}
        )
        payload = {"schema": ["EMAIL"], "data": [[sha]]}
        replaced = CustomAudience(audience.get_id(), api=api).create_users_replace(
            params={"payload": payload, "session": {"session_id": 7, "batch_seq": 1, "last_batch_flag": True}}
        )
        page = Page(page_id, api=make_api(sandbox, token=sandbox.page_token))  # the Page's own token
        page.create_subscribed_app(params={"subscribed_fields": ["leadgen"]})
        subscribed = [dict(app) for app in page.get_subscribed_apps()]
        page.delete_subscribed_apps()
        job = account.get_insights(
            fields=["campaign_id", "spend"],
            params={
                "level": "campaign",
                "time_range": {"since": "2026-11-01", "until": "2026-11-30"},
                "time_increment": 1,
                "filtering": [{"field": "campaign.id", "operator": "IN", "value": [campaign.get_id()]}],
            },
            is_async=True,
        )
        Campaign(campaign.get_id(), api=api).api_delete()
        return {"adset": adset.get_id(), "replaced": dict(replaced), "subscribed": subscribed, "job": job.get_id()}

    result = await run(write)
    assert result["replaced"]["num_received"] == 1
    assert result["subscribed"][0]["subscribed_fields"] == ["leadgen"]
    assert result["job"]
    _, _, adset = await sandbox.graph("GET", result["adset"], fields="daily_budget,status")
    assert adset["daily_budget"] == "2600"


async def test_sdk_reads_audiences_and_report_runs_with_declared_types(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)

    def read() -> tuple[dict[str, Any], dict[str, Any]]:
        audience = AdAccount(sandbox.account_id, api=api).create_custom_audience(
            params={"name": "Typed", "subtype": "CUSTOM", "customer_file_source": "USER_PROVIDED_ONLY"}
        )
        job = AdAccount(sandbox.account_id, api=api).get_insights(params={"level": "account"}, is_async=True)
        bodies = []
        for cls, object_id in ((CustomAudience, audience.get_id()), (AdReportRun, job.get_id())):
            fields = ",".join(sorted(cls._field_types))
            bodies.append(api.call("GET", (object_id,), params={"fields": fields}).json())
        return bodies[0], bodies[1]

    audience, run_body = await run(read)
    for cls, body in ((CustomAudience, audience), (AdReportRun, run_body)):
        for name, value in body.items():
            declared = cls._field_types[name]
            assert _json_type_ok(declared, value), f"{cls.__name__}.{name}: {value!r} is not {declared}"
    assert audience["approximate_count_lower_bound"] == 0
    assert isinstance(run_body["async_percent_completion"], int)


async def test_sdk_insights_rows_have_the_declared_types(sandbox: SandboxHandle) -> None:
    api = make_api(sandbox)
    simulated = ["account_currency", "account_id", "account_name", "action_values", "actions", "ad_id", "ad_name",
                 "adset_id", "adset_name", "campaign_id", "campaign_name", "clicks", "cost_per_action_type", "cpc",
                 "cpm", "ctr", "date_start", "date_stop", "frequency", "impressions", "inline_link_clicks",
                 "objective", "optimization_goal", "reach", "spend"]
    assert set(simulated) <= set(AdsInsights._field_types)

    def read() -> list[dict[str, Any]]:
        return [dict(row) for row in AdAccount(sandbox.account_id, api=api).get_insights(
            fields=simulated, params={"level": "ad", "date_preset": "last_7d", "time_increment": 1, "limit": 500})]

    rows = await run(read)
    assert rows
    for row in rows:
        for name, value in row.items():
            declared = AdsInsights._field_types[name]
            assert _json_type_ok(declared, value), f"AdsInsights.{name}: {value!r} is not {declared}"
    assert all(isinstance(row["impressions"], str) for row in rows), "counts are strings in insights"
