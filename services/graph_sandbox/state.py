"""The sandbox's in-memory world: a deterministic, seeded set of Meta objects.

Default seed (``ads=20``): USD account ``act_1000000001`` (America/New_York) with three campaigns and eight ad
sets whose seeded delivery makes rule engines fire:

* ``Prospecting - Broad`` (loser): CPL well above $50 on thousands of impressions per day;
* ``Prospecting - Lookalike`` (winner): CPL around $14, ~5 leads a day;
* ``Prospecting - Interests`` (fatigued): 7-day frequency above 4;
* ``Prospecting - Advantage+`` (burner): > $300 spent per day (today included) and no leads;
* two ad sets under a campaign-budget (CBO) campaign, two under a paused traffic campaign.

Plus a JPY account ``act_1000000002`` (Asia/Tokyo, offset-1 currency), a Page with two lead forms, seeded
lead records for every on-Facebook lead of the seeded history (insights count these records), and a pixel per account.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from . import answers
from .clock import Clock

# Offset-1 currencies (docs/meta-api.md §11.1).
OFFSET_ONE = frozenset({"CLP", "COP", "CRC", "HUF", "ISK", "IDR", "JPY", "KRW", "PYG", "TWD", "VND"})

MAIN_ACCOUNT = "act_1000000001"
MAIN_ACCOUNT_TZ = "America/New_York"
LEAD_RETENTION_SECONDS = 90 * 86400  # Meta keeps a lead's data 90 days
JPY_ACCOUNT = "act_1000000002"
PAGE_ID = "102030405060708"
PIXEL_ID = "778899001122334"
JPY_PIXEL_ID = "778899001122335"  # the JPY account's own pixel (a second account with its own dataset)
BUSINESS_ID = "901234567890123"
# The accounts' `min_daily_budget` (minor units): daily budgets below it are refused, as by Meta.
MIN_DAILY_BUDGET = {"USD": 100, "JPY": 150}


@dataclass
class Profile:
    """Seeded delivery of one ad per day, in the account's minor units."""

    spend: int  # minor units per ad per day
    cpm: float  # minor units per 1000 impressions
    ctr: float
    cpl: float | None  # minor units per lead; None = no leads
    daily_frequency: float
    pixel_share: float = 0.1  # share of leads that are website (pixel) leads
    first_day_ago: int = 10_000  # delivers from this many days ago...
    last_day_ago: int = 0  # ...until this many days ago


def page_token(page_id: str) -> str:
    """The sandbox's Page access token of `page_id` (`GET /{page-id}?fields=access_token`): what Page-token-only
    calls (`POST /{page-id}/leadgen_forms`) require."""
    return f"EAAPage{page_id}SandboxToken"


@dataclass
class Node:
    """A Graph object: `fields` are what Meta stores, the rest is sandbox bookkeeping."""

    id: str
    kind: str
    fields: dict[str, Any]
    account: str | None = None
    page_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def iso_time(ts: float, tz: ZoneInfo | None = None) -> str:
    """Meta's timestamp format, e.g. `2026-11-22T08:49:14+0000`."""
    dt = datetime.fromtimestamp(ts, tz or UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S%z")


def wire_amount(minor: float, currency: str) -> str:
    """Insights money in major units as a string (`"12.34"` USD, `"1234"` JPY)."""
    if currency in OFFSET_ONE:
        return str(round(minor))
    return f"{minor / 100:.2f}"




class SandboxState:
    """Everything the fake Graph API knows; rebuilt from a seed by `/_sandbox/reset`."""

    def __init__(
        self,
        seed: int = 42,
        ads: int = 20,
        days: int = 30,
        app_id: str = "1234567890123456",
        *,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.seed = seed
        self.days = days
        self.app_id = app_id
        self.rng = random.Random(seed)
        self.nodes: dict[str, Node] = {}
        self._next_id = 120_210_000_000_000_001
        self._next_lead = 880_000_000_000_001
        self.capi_events: list[dict[str, Any]] = []
        self.capi_requests: Counter[str] = Counter()
        # On-Facebook leads per (ad id, ISO date in the account's time zone): what insights report. Deleting a
        # lead's data does not change them, as at Meta.
        self.lead_days: Counter[tuple[str, str]] = Counter()
        # Restatements: ISO date -> multiplicative factor on delivery numbers.
        self.restatements: dict[str, float] = {}
        self.token: dict[str, Any] = {
            "is_valid": True,
            "type": "SYSTEM_USER",
            "expires_at": 0,
            "data_access_expires_at": int(self.now()) + 90 * 86400,
            "scopes": [
                "ads_management",
                "ads_read",
                "business_management",
                "leads_retrieval",
                "pages_manage_ads",
                "pages_manage_metadata",
                "pages_read_engagement",
                "pages_show_list",
            ],
            "user_id": "100000000000042",
        }
        self.subscribed_apps: dict[str, list[str]] = {}
        self.review_seconds = 3600.0  # how long a new ad stays PENDING_REVIEW (review.py)
        self._seed(ads)

    # ------------------------------------------------------------------ ids and lookup
    def new_id(self) -> str:
        self._next_id += self.rng.randint(1, 97)
        return str(self._next_id)

    def new_lead_id(self) -> str:
        self._next_lead += self.rng.randint(1, 997)
        return str(self._next_lead)

    def add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node

    def get(self, node_id: str) -> Node | None:
        return self.nodes.get(node_id)

    def of_kind(self, kind: str, **match: Any) -> list[Node]:
        out = []
        for node in self.nodes.values():
            if node.kind != kind:
                continue
            if all(_match_attr(node, k, v) for k, v in match.items()):
                out.append(node)
        return out

    def account_tz(self, account: str) -> ZoneInfo:
        node = self.nodes.get(account)
        return ZoneInfo(node.fields["timezone_name"] if node else MAIN_ACCOUNT_TZ)

    def currency(self, account: str) -> str:
        node = self.nodes.get(account)
        return node.fields["currency"] if node else "USD"

    def now(self) -> float:
        """Seconds since the epoch on the sandbox's clock (`clock.py`): every time the sandbox uses comes from here."""
        return self.clock.time()

    def local_now(self, account: str) -> datetime:
        return datetime.fromtimestamp(self.now(), self.account_tz(account))

    def today(self, account: str) -> date:
        return self.local_now(account).date()

    # ------------------------------------------------------------------ seeding
    def _seed(self, ads: int) -> None:
        now = self.now()
        created = now - (self.days + 5) * 86400
        for acc_id, name, currency, tz in (
            (MAIN_ACCOUNT, "Leadwire Demo (USD)", "USD", MAIN_ACCOUNT_TZ),
            (JPY_ACCOUNT, "Leadwire Tokyo (JPY)", "JPY", "Asia/Tokyo"),
        ):
            self.add(
                Node(
                    acc_id,
                    "adaccount",
                    {
                        "name": name,
                        "currency": currency,
                        "timezone_name": tz,
                        "account_status": 1,
                        "amount_spent": "0",
                        "spend_cap": "0",
                        "min_daily_budget": MIN_DAILY_BUDGET[currency],
                        "business": {"id": BUSINESS_ID, "name": "Leadwire Demo Co"},
                        "created_time": created,
                    },
                    account=acc_id,
                )
            )
        page = self.add(
            Node(PAGE_ID, "page", {"name": "Leadwire Demo Page", "category": "Local Business",
                                   "access_token": page_token(PAGE_ID)}, page_id=PAGE_ID)
        )
        forms = []
        for form_name in ("Contact us", "Get a quote"):
            fid = self.new_id()
            forms.append(
                self.add(
                    Node(
                        fid,
                        "leadgen_form",
                        {
                            "name": form_name,
                            "status": "ACTIVE",
                            "locale": "en_US",
                            "created_time": created,
                            "questions": [
                                {"key": "full_name", "label": "Full name", "type": "FULL_NAME", "id": f"{fid}1"},
                                {"key": "email", "label": "Email", "type": "EMAIL", "id": f"{fid}2"},
                                {"key": "phone_number", "label": "Phone number", "type": "PHONE", "id": f"{fid}3"},
                                {"key": "city", "label": "City", "type": "CITY", "id": f"{fid}4"},
                                {"key": "zip_code", "label": "ZIP code", "type": "ZIP", "id": f"{fid}5"},
                                {
                                    "key": "when_would_you_like_to_start?",
                                    "label": "When would you like to start?",
                                    "type": "CUSTOM",
                                    "id": f"{fid}6",
                                },
                            ],
                        },
                        page_id=page.id,
                    )
                )
            )
        self.add(Node(PIXEL_ID, "pixel", {"name": "Leadwire Demo Pixel", "code": ""}, account=MAIN_ACCOUNT))
        self.add(Node(JPY_PIXEL_ID, "pixel", {"name": "Leadwire Tokyo Pixel", "code": ""}, account=JPY_ACCOUNT))
        self._seed_main(ads, forms, created)
        self._seed_jpy(created)
        self._seed_leads(now)

    def _campaign(
        self, account: str, name: str, objective: str, status: str, created: float, daily_budget: int | None = None
    ) -> Node:
        fields: dict[str, Any] = {
            "name": name,
            "objective": objective,
            "status": status,
            "special_ad_categories": [],
            "buying_type": "AUCTION",
            "created_time": created,
            "updated_time": created,
            "start_time": created,
            "bid_strategy": "LOWEST_COST_WITHOUT_CAP" if daily_budget else None,
            "is_adset_budget_sharing_enabled": None if daily_budget else False,
        }
        if daily_budget:
            fields["daily_budget"] = daily_budget
        return self.add(Node(self.new_id(), "campaign", fields, account=account))

    def _adset(
        self, campaign: Node, name: str, status: str, created: float, daily_budget: int | None, goal: str
    ) -> Node:
        fields: dict[str, Any] = {
            "name": name,
            "status": status,
            "campaign_id": campaign.id,
            "billing_event": "IMPRESSIONS",
            "optimization_goal": goal,
            "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
            "targeting": {"geo_locations": {"countries": ["US"]}, "age_min": 18, "age_max": 65},
            "promoted_object": {"page_id": PAGE_ID} if goal == "LEAD_GENERATION" else None,
            "created_time": created,
            "updated_time": created,
            "start_time": created,
        }
        if daily_budget:
            fields["daily_budget"] = daily_budget
        return self.add(Node(self.new_id(), "adset", fields, account=campaign.account, extra={"budget_changes": []}))

    def _ad(self, adset: Node, name: str, status: str, created: float, profile: Profile, form: Node | None) -> Node:
        creative = self.add(
            Node(
                self.new_id(),
                "adcreative",
                {
                    "name": f"Creative for {name}",
                    "title": name,
                    "body": "Get a free quote today",
                    "object_story_spec": {
                        "page_id": PAGE_ID,
                        "link_data": {
                            "message": "Get a free quote today",
                            "link": "https://example.com/quote",
                            "call_to_action": {
                                "type": "SIGN_UP",
                                "value": {"lead_gen_form_id": form.id} if form else {},
                            },
                        },
                    },
                    "status": "ACTIVE",
                },
                account=adset.account,
            )
        )
        return self.add(
            Node(
                self.new_id(),
                "ad",
                {
                    "name": name,
                    "status": status,
                    "adset_id": adset.id,
                    "campaign_id": adset.fields["campaign_id"],
                    "creative": {"id": creative.id},
                    "created_time": created,
                    "updated_time": created,
                },
                account=adset.account,
                extra={"profile": profile, "form_id": form.id if form else None},
            )
        )

    def _seed_main(self, ads: int, forms: list[Node], created: float) -> None:
        rng = self.rng
        acc = MAIN_ACCOUNT
        # Scenario ad sets first, then "normal" ones; profiles are per *ad set* per day (split over its ads).
        scenarios: list[tuple[str, str, Profile]] = [
            ("Prospecting - Broad", "ACTIVE", Profile(6000, 1000, 0.009, 9000, 1.15)),
            ("Prospecting - Lookalike", "ACTIVE", Profile(7000, 1200, 0.018, 1400, 1.2)),
            ("Prospecting - Interests", "ACTIVE", Profile(3000, 1100, 0.012, 3500, 2.6)),
            ("Prospecting - Advantage+", "ACTIVE", Profile(36000, 900, 0.007, None, 1.1)),
        ]
        n_adsets = max(8, math.ceil(ads / 2.5))
        per_adset = _split_count(ads, n_adsets)
        c1 = self._campaign(acc, "Leads - Prospecting", "OUTCOME_LEADS", "ACTIVE", created)
        c2 = self._campaign(acc, "Leads - Retargeting (CBO)", "OUTCOME_LEADS", "ACTIVE", created, daily_budget=15000)
        c3 = self._campaign(acc, "Traffic - Blog (paused)", "OUTCOME_TRAFFIC", "PAUSED", created)
        ad_no = 0
        for i in range(n_adsets):
            if i < len(scenarios):
                name, status, prof = scenarios[i]
                campaign, goal = c1, "LEAD_GENERATION"
                budget: int | None = max(prof.spend + 500, 1000)
            else:
                j = i - len(scenarios)
                campaign = c2 if j % 2 == 0 else c3
                name = f"{'Retargeting' if campaign is c2 else 'Blog readers'} - Audience {j + 1}"
                status = "ACTIVE"
                spend = rng.randint(2500, 6000)
                if campaign is c3:
                    prof = Profile(
                        spend,
                        rng.randint(600, 900),
                        rng.uniform(0.01, 0.02),
                        None,
                        rng.uniform(1.1, 1.4),
                        first_day_ago=self.days,
                        last_day_ago=10,
                    )
                    goal = "LINK_CLICKS"
                else:
                    prof = Profile(
                        spend,
                        rng.randint(900, 1500),
                        rng.uniform(0.008, 0.02),
                        rng.randint(2500, 4500),
                        rng.uniform(1.1, 1.5),
                    )
                    goal = "LEAD_GENERATION"
                budget = None if campaign is c2 else spend + 1000
            adset = self._adset(campaign, name, status, created, budget, goal)
            count = per_adset[i]
            for k in range(count):
                ad_no += 1
                share = 1.0 / count
                ad_prof = Profile(
                    spend=max(1, round(prof.spend * share * rng.uniform(0.85, 1.15))),
                    cpm=prof.cpm * rng.uniform(0.9, 1.1),
                    ctr=prof.ctr * rng.uniform(0.9, 1.1),
                    cpl=prof.cpl * rng.uniform(0.9, 1.1) if prof.cpl else None,
                    daily_frequency=prof.daily_frequency,
                    first_day_ago=prof.first_day_ago,
                    last_day_ago=prof.last_day_ago,
                )
                # One paused ad in a running ad set, for effective_status variety: paused two days ago, so it
                # delivered until then and gets no impressions while paused (delivery.py).
                ad_status = "PAUSED" if (i == 4 and k == count - 1 and count > 1) else "ACTIVE"
                if ad_status == "PAUSED":
                    ad_prof.last_day_ago = max(ad_prof.last_day_ago, 2)
                form = forms[ad_no % 2] if goal == "LEAD_GENERATION" else None
                self._ad(adset, f"{name} - Ad {k + 1}", ad_status, created, ad_prof, form)

    def _seed_jpy(self, created: float) -> None:
        c = self._campaign(JPY_ACCOUNT, "Tokyo Leads", "OUTCOME_LEADS", "ACTIVE", created)
        adset = self._adset(c, "Tokyo - Broad", "ACTIVE", created, 8000, "LEAD_GENERATION")
        for k in range(2):
            self._ad(
                adset, f"Tokyo - Broad - Ad {k + 1}", "ACTIVE", created, Profile(3500, 1300, 0.012, 2200, 1.2), None
            )

    def _seed_leads(self, now: float) -> None:
        """Lead records for every on-Facebook lead of the seeded history: per ad and day, about spend / CPL
        (less the pixel share), at times in that day up to an hour ago. Insights count these very records."""
        for ad in self.of_kind("ad"):
            profile: Profile | None = ad.extra.get("profile")
            form_id = ad.extra.get("form_id")
            if profile is None or not profile.cpl or not form_id:
                continue
            tz = self.account_tz(ad.account or "")
            today = datetime.fromtimestamp(now, tz).date()
            expected = profile.spend / profile.cpl * (1 - profile.pixel_share)
            for ago in range(max(profile.last_day_ago, 0), min(self.days, profile.first_day_ago + 1)):
                day = today - timedelta(days=ago)
                rng = random.Random(f"{self.seed}:leads:{ad.id}:{day.isoformat()}")
                count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
                start = datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()
                for _ in range(count):
                    created = start + rng.uniform(0, 86400)
                    if created <= now - 3600:
                        self.create_lead(form_id, ad=ad, created=created)

    # ------------------------------------------------------------------ leads
    def create_lead(
        self, form_id: str, *, ad: Node | None = None, created: float | None = None, organic: bool = False
    ) -> Node:
        """A realistic fake lead on `form_id` (attributed to `ad` or to a random ad using the form)."""
        form = self.nodes[form_id]
        rng = self.rng
        if ad is None and not organic:
            candidates = [n for n in self.of_kind("ad") if n.extra.get("form_id") == form_id]
            ad = rng.choice(candidates) if candidates else None
        field_data = answers.field_data(form.fields.get("questions") or [], rng)
        fields: dict[str, Any] = {
            "created_time": created if created is not None else self.now(),
            "field_data": field_data,
            "form_id": form_id,
            "is_organic": ad is None,
            "platform": rng.choice(["fb", "fb", "ig"]),
            "custom_disclaimer_responses": [{"checkbox_key": "marketing_opt_in", "is_checked": rng.choice(["1", ""])}],
        }
        if ad is not None:
            fields.update(
                {
                    "ad_id": ad.id,
                    "ad_name": ad.fields["name"],
                    "adset_id": ad.fields["adset_id"],
                    "adset_name": self.nodes[ad.fields["adset_id"]].fields["name"],
                    "campaign_id": ad.fields["campaign_id"],
                    "campaign_name": self.nodes[ad.fields["campaign_id"]].fields["name"],
                }
            )
        if ad is not None:  # insights count on-Facebook leads from the records, per ad and day (account tz)
            day = datetime.fromtimestamp(fields["created_time"], self.account_tz(ad.account or "")).date()
            self.lead_days[(ad.id, day.isoformat())] += 1
        return self.add(Node(self.new_lead_id(), "lead", fields, page_id=form.page_id))


def _split_count(total: int, parts: int) -> list[int]:
    base, rem = divmod(total, parts)
    return [base + (1 if i < rem else 0) for i in range(parts)]


def _match_attr(node: Node, key: str, value: Any) -> bool:
    if key in ("account", "page_id"):
        return getattr(node, key) == value
    return node.fields.get(key) == value


def day_range(start: date, stop: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((stop - start).days + 1)]
