"""Campaign commands (what other systems and the rules engine ask the campaign executor to do) and their results.

`CampaignCommand` travels on the pinned routing key `campaign.command`. Its payload is *one* command object whose
`kind` selects the shape (a discriminated union), so an outside system writes
`{"payload": {"kind": "pause", "command_id": "...", "object_id": "...", "level": "adset", ...}}` and nothing else.
The union is a `RootModel`: the envelope's payload must be a model, and a root model keeps the JSON flat (no
wrapper key such as `payload.command.kind` for integrators to get wrong). In Python, `message.payload.root` is
the concrete command.

Money is always an integer in the ad account currency's minor unit (cents for USD, whole yen for JPY; see
`shared/money.py` and docs/meta-api.md §11.1), exactly as Meta stores it.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from contracts.envelope import Payload
from contracts.lead_forms import LeadFormSpec
from contracts.meta_enums import (
    AdSetBidStrategy,
    BillingEvent,
    CallToActionType,
    CampaignBidStrategy,
    CampaignObjective,
    OptimizationGoal,
    SpecialAdCategory,
)
from contracts.values import ACT_ID, DIGITS_25, check_finite

__all__ = [
    "RETIRED_KINDS",
    "AdSetSpec",
    "AdSpec",
    "ArchiveCommand",
    "BudgetMove",
    "BudgetSpec",
    "CampaignCommand",
    "CampaignSpec",
    "ChangeBudgetCommand",
    "CommandResult",
    "CreateCampaignCommand",
    "CreateLeadFormCommand",
    "CreativeSpec",
    "DeleteCommand",
    "MetaErrorInfo",
    "PauseCommand",
    "RebalanceBudgetsCommand",
    "RotateCreativeCommand",
    "SetBudgetCommand",
    "SyncAudienceCommand",
    "UnpauseCommand",
]

ObjectLevel = Literal["campaign", "adset", "ad"]
BudgetLevel = Literal["campaign", "adset"]
BudgetKind = Literal["daily", "lifetime"]
# Meta's enums (objective, special ad categories, bid strategies, optimization goals, billing events, call to action
# types) come from the facebook-business SDK through the generated contracts/meta_enums.py (`make contracts`).
Objective = CampaignObjective
ResultStatus = Literal["ok", "refused", "failed", "dry_run"]
ObjectId = Annotated[str, Field(pattern=DIGITS_25, description="Meta object id (digits).",
                                examples=["120210000000000123"])]
AccountId = Annotated[str, Field(pattern=ACT_ID, description="Ad account id with the act_ prefix.",
                                 examples=["act_1000000001"])]

# Kinds this contract once accepted and no longer does, with why and what to send instead. A message of a retired
# kind fails validation with this reason (and is parked with it), never with a guess at its other fields.
RETIRED_KINDS: dict[str, str] = {
    "upload_audience": "it carried customer e-mails and phones on the broker; send `sync_audience` with an audience "
                       "definition's name (EXECUTOR_AUDIENCES_FILE): the executor reads the rows from the database",
}


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class _CommandBase(Payload):
    """Fields every command carries."""

    command_id: uuid.UUID = Field(
        description="Idempotency key chosen by the sender: the executor acts on a command_id at most once, "
                    "however often the command is delivered or re-sent.",
        examples=["5d0c3c7e-4f55-4b8e-9a53-0c0d2f6b8f11"],
    )
    requested_by: str = Field(
        min_length=1, max_length=200,
        description="Who asks: a rule name (`rules_engine:10_kill_underperformers`), a user or a system.",
        examples=["rules_engine:20_scale_winners"],
    )
    reason: str = Field(
        default="", max_length=2000,
        description="Why, in one sentence; recorded in the audit log and echoed in the result. No PII.",
        examples=["CPL $14 over 7 days is below the $25 target"],
    )
    dry_run: bool = Field(
        default=False,
        description="Check guardrails and record what would be done, without changing anything at Meta.",
        examples=[False],
    )
    force: bool = Field(
        default=False,
        description="Skip the executor's soft guardrails (budget step, changes per hour, spend floor, stale "
                    "decision, deleted/archived objects); needs a `reason`, and the result says `forced`. Never "
                    "passes the hard limits (hard_max_budget, daily_ceiling, budget_increases_per_week) nor "
                    "Meta's own.",
        examples=[False],
    )

    @model_validator(mode="after")
    def _forced_needs_reason(self) -> _CommandBase:
        if self.force and not self.reason.strip():
            raise ValueError("a forced command must carry a reason")
        return self


class _ObjectCommand(_CommandBase):
    object_id: ObjectId
    level: ObjectLevel = Field(description="What the object is.", examples=["adset"])
    account_id: AccountId | None = Field(
        default=None, description="The object's ad account, if the sender knows it (saves a lookup).",
    )


class PauseCommand(_ObjectCommand):
    """Set the object's status to PAUSED."""

    kind: Literal["pause"] = "pause"


class UnpauseCommand(_ObjectCommand):
    """Set the object's status to ACTIVE."""

    kind: Literal["unpause"] = "unpause"


class ArchiveCommand(_ObjectCommand):
    """Set the object's status to ARCHIVED (cannot be undone; archived objects can only be renamed or deleted)."""

    kind: Literal["archive"] = "archive"


class DeleteCommand(_ObjectCommand):
    """Delete the object (status DELETED)."""

    kind: Literal["delete"] = "delete"


class _BudgetCommand(_CommandBase):
    object_id: ObjectId
    level: BudgetLevel = Field(description="Campaign (campaign budget) or ad set.", examples=["adset"])
    account_id: AccountId | None = Field(default=None, description="The object's ad account, if known.")
    budget: BudgetKind = Field(default="daily", description="Which budget to change.", examples=["daily"])
    expected_current_minor: int | None = Field(
        default=None, gt=0,
        description="The budget the sender based its decision on. If Meta now reports another value, the "
                    "command is refused (unless `force`): the decision is stale.",
        examples=[10000],
    )


class SetBudgetCommand(_BudgetCommand):
    """Set the budget to an absolute amount."""

    kind: Literal["set_budget"] = "set_budget"
    amount_minor: int = Field(
        gt=0, description="New budget, integer in the account currency's minor unit (cents for USD, yen for JPY).",
        examples=[11500],
    )


class ChangeBudgetCommand(_BudgetCommand):
    """Change the budget relative to its current value: by `percent` or by `amount_minor` (exactly one).

    The executor turns it into an absolute target on first attempt and stores it, so a redelivered or retried
    command never applies the change twice.
    """

    kind: Literal["change_budget"] = "change_budget"
    percent: float | None = Field(
        default=None, gt=-100, le=1000, description="Relative change in percent; negative lowers the budget.",
        examples=[15.0],
    )
    amount_minor: int | None = Field(
        default=None, description="Change in minor units (cents / yen); negative lowers the budget.",
        examples=[-1500],
    )

    @model_validator(mode="after")
    def _one_change(self) -> ChangeBudgetCommand:
        if (self.percent is None) == (self.amount_minor is None):
            raise ValueError("give exactly one of percent and amount_minor")
        if self.percent == 0 or self.amount_minor == 0:
            raise ValueError("a change of zero is not a change")
        return self


class BudgetSpec(_Spec):
    kind: BudgetKind = Field(default="daily", description="Daily or lifetime budget.", examples=["daily"])
    amount_minor: int = Field(gt=0, description="Integer, account currency minor unit.", examples=[5000])


class CampaignSpec(_Spec):
    name: str = Field(min_length=1, max_length=400, examples=["MVA Leads - Houston"])
    objective: Objective = Field(default="OUTCOME_LEADS", description="ODAX objective (required since v17).")
    special_ad_categories: list[SpecialAdCategory] = Field(
        description='Required by Meta on every create; `[]` or `["NONE"]` if none applies.', examples=[["NONE"]],
    )
    special_ad_category_country: list[str] = Field(
        default_factory=list, description="ISO alpha-2 countries; required with a real special ad category.",
        examples=[["US"]],
    )
    budget: BudgetSpec | None = Field(
        default=None, description="Campaign budget (Advantage campaign budget); else budgets live on the ad set.",
    )
    stop_time: str | None = Field(default=None, description="Needed with a lifetime campaign budget (ISO 8601).")
    bid_strategy: CampaignBidStrategy | None = Field(default=None, examples=["LOWEST_COST_WITHOUT_CAP"])
    is_adset_budget_sharing_enabled: bool = Field(
        default=False, description="Sent when budgets are on ad sets (required by Meta since v24).",
    )

    @model_validator(mode="after")
    def _countries(self) -> CampaignSpec:
        if any(c != "NONE" for c in self.special_ad_categories) and not self.special_ad_category_country:
            raise ValueError("special_ad_category_country is required with a special ad category")
        if self.budget is not None and self.budget.kind == "lifetime" and not self.stop_time:
            raise ValueError("a lifetime campaign budget needs stop_time")
        return self


class AdSetSpec(_Spec):
    name: str = Field(min_length=1, max_length=400, examples=["MVA - 25-65 - Texas"])
    optimization_goal: OptimizationGoal = Field(default="LEAD_GENERATION", examples=["LEAD_GENERATION"])
    billing_event: BillingEvent = Field(default="IMPRESSIONS", examples=["IMPRESSIONS"])
    targeting: dict[str, Any] = Field(
        description="Meta targeting spec (must include geo_locations).",
        examples=[{"geo_locations": {"regions": [{"key": "4063"}]}, "age_min": 25, "age_max": 65}],
    )
    page_id: ObjectId = Field(description="promoted_object.page_id: the Page running the lead form.")
    budget: BudgetSpec | None = Field(default=None, description="Ad set budget (when the campaign has none).")
    bid_strategy: AdSetBidStrategy | None = Field(default=None, examples=["LOWEST_COST_WITHOUT_CAP"])
    bid_amount_minor: int | None = Field(default=None, gt=0)
    start_time: str | None = Field(default=None, description="ISO 8601; default now.")
    end_time: str | None = Field(default=None, description="ISO 8601; needed with a lifetime budget.")

    @field_validator("targeting")
    @classmethod
    def _geo(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_finite(value, "targeting")
        if "geo_locations" not in value:
            raise ValueError("targeting needs geo_locations")
        return value


class CreativeSpec(_Spec):
    name: str = Field(min_length=1, max_length=400, examples=["Were you injured?"])
    page_id: ObjectId
    lead_form_id: ObjectId = Field(description="Instant Form the call to action opens.")
    image_url: str | None = Field(default=None, description="Image by URL (one of image_url, image_hash).")
    image_hash: str | None = Field(default=None, description="Hash of an image uploaded to /act_<id>/adimages.")
    message: str = Field(min_length=1, max_length=5000, examples=["Injured in a crash? Free case review."])
    link: str = Field(min_length=1, examples=["https://example.com/free-case-review"])
    headline: str | None = Field(default=None, max_length=255, examples=["No fee unless we win"])
    call_to_action: CallToActionType = Field(default="SIGN_UP", description="The button's type.",
                                             examples=["SIGN_UP"])

    @model_validator(mode="after")
    def _one_image(self) -> CreativeSpec:
        if (self.image_url is None) == (self.image_hash is None):
            raise ValueError("give exactly one of image_url and image_hash")
        return self


class AdSpec(_Spec):
    name: str = Field(min_length=1, max_length=400, examples=["MVA Ad - Image A"])


class CreateCampaignCommand(_CommandBase):
    """Create campaign, ad set, creative and ad in one go; all PAUSED unless `status` is ACTIVE.

    If any step fails, what was created is deleted (or left paused when deleting fails) and the result lists it.
    """

    kind: Literal["create_campaign"] = "create_campaign"
    account_id: AccountId
    status: Literal["PAUSED", "ACTIVE"] = Field(
        default="PAUSED", description="Status of campaign, ad set and ad. New ads still go through review.",
    )
    campaign: CampaignSpec
    ad_set: AdSetSpec
    creative: CreativeSpec
    ad: AdSpec

    @model_validator(mode="after")
    def _one_budget(self) -> CreateCampaignCommand:
        if (self.campaign.budget is None) == (self.ad_set.budget is None):
            raise ValueError("set exactly one budget: on the campaign or on the ad set")
        if self.ad_set.budget is not None and self.ad_set.budget.kind == "lifetime" and not self.ad_set.end_time:
            raise ValueError("a lifetime ad set budget needs end_time")
        return self


class SyncAudienceCommand(_CommandBase):
    """Bring one configured audience in line with the CRM (EXECUTOR_AUDIENCES_FILE): a customer-file audience is
    created when missing and its members added / removed from the leads in PostgreSQL; a lookalike is created once
    from its seed. Carries the definition's name only: the executor reads the rows from the database, so no
    personal data travels on the broker.
    """

    kind: Literal["sync_audience"] = "sync_audience"
    audience: str = Field(
        min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.-]+$",
        description="The audience definition's name in the audiences file.", examples=["past_leads_180d"],
    )


class RotateCreativeCommand(_CommandBase):
    """Rotate a fatigued ad out of its ad set: activate a paused reserve ad of the same ad set, then pause the ad.

    Ids only. At execution the executor re-reads the ad set's ads and acts only if the ad is still ACTIVE, the
    reserve is still PAUSED, tagged as a reserve (its name contains `[reserve]`, see shared/creatives.py) and
    able to deliver, and both are still in the ad set: the ad set is never left without an active ad (the
    reserve is activated first; the ad is paused only once Meta shows the reserve active). `force` passes none of
    these checks.
    """

    kind: Literal["rotate_creative"] = "rotate_creative"
    object_id: ObjectId = Field(description="The ad to rotate out (paused).")
    reserve_ad_id: ObjectId = Field(description="The paused reserve ad of the same ad set to activate.")
    adset_id: ObjectId = Field(description="The ad set both ads belong to.")
    account_id: AccountId | None = Field(default=None, description="The ads' ad account, if known.")
    level: Literal["ad"] = Field(default="ad", description="Always `ad`.")

    @model_validator(mode="after")
    def _two_ads(self) -> RotateCreativeCommand:
        if self.reserve_ad_id == self.object_id:
            raise ValueError("the reserve must be another ad than the one rotated out")
        return self


class CreateLeadFormCommand(_CommandBase):
    """Create a lead form (Instant Form) on a Page, once: a form of the same name already recorded for the Page, or
    found there at Meta, is recorded and not created again. The form is then scanned by lead_fetcher's backfill.
    Carries the form's definition only (questions, texts, URLs): no personal data.
    """

    kind: Literal["create_lead_form"] = "create_lead_form"
    page_id: ObjectId = Field(description="The Page the form belongs to (one of META_PAGE_IDS).")
    form: LeadFormSpec


class BudgetMove(_Spec):
    """One object's part of a rebalance: its daily budget from ``from_minor`` (what the sender saw) to ``to_minor``."""

    object_id: ObjectId
    from_minor: int = Field(gt=0, description="The daily budget the decision was based on (minor units).",
                            examples=[10000])
    to_minor: int = Field(gt=0, description="The new daily budget (minor units).", examples=[8000])


class RebalanceBudgetsCommand(_CommandBase):
    """Move daily budget between campaigns or ad sets of one ad account within a fixed total (ids and amounts).

    The moves' ``from_minor`` sum equals their ``to_minor`` sum, to the minor unit. The executor applies the
    decreases first, then the increases, so the total never exceeds it at any moment: if a decrease fails, no
    increase is made; an increase refused by a guardrail is reported and the total is left lower, never higher.
    Every object must show its ``from_minor`` at Meta when the command is first attempted, else nothing is
    applied (`changed_elsewhere`, `force` or not).
    """

    kind: Literal["rebalance_budgets"] = "rebalance_budgets"
    account_id: AccountId
    level: BudgetLevel = Field(description="Campaign budgets (CBO) or ad set budgets.", examples=["adset"])
    moves: list[BudgetMove] = Field(min_length=2, max_length=200, description="One entry per object changed.")

    @model_validator(mode="after")
    def _fixed_total(self) -> RebalanceBudgetsCommand:
        ids = [m.object_id for m in self.moves]
        if len(set(ids)) != len(ids):
            raise ValueError("an object appears twice in moves")
        before = sum(m.from_minor for m in self.moves)
        after = sum(m.to_minor for m in self.moves)
        if before != after:
            raise ValueError(f"moves change the total from {before} to {after}: a rebalance keeps it")
        if all(m.from_minor == m.to_minor for m in self.moves):
            raise ValueError("a rebalance that moves nothing is not a change")
        return self


AnyCampaignCommand = Annotated[
    PauseCommand | UnpauseCommand | ArchiveCommand | DeleteCommand | SetBudgetCommand | ChangeBudgetCommand
    | CreateCampaignCommand | SyncAudienceCommand | RotateCreativeCommand | CreateLeadFormCommand
    | RebalanceBudgetsCommand,
    Field(discriminator="kind"),
]


class CampaignCommand(RootModel[AnyCampaignCommand]):
    """One campaign command; `kind` selects which. Retired kinds (`upload_audience`) are refused with the reason."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _not_retired(cls, data: Any) -> Any:
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(kind, str) and kind in RETIRED_KINDS:
            raise ValueError(f"command kind {kind!r} is retired: {RETIRED_KINDS[kind]}")
        return data


class MetaErrorInfo(_Spec):
    """Meta's error, as returned (never contains a token)."""

    code: int | None = None
    subcode: int | None = None
    fbtrace_id: str | None = None
    message: str = ""
    user_title: str | None = None
    user_message: str | None = None


class CommandResult(Payload):
    """What the executor did with one command."""

    command_id: uuid.UUID = Field(description="The command's idempotency key.")
    kind: str = Field(description="The command's kind.", examples=["set_budget"])
    status: ResultStatus = Field(
        description="ok: done; refused: a guardrail said no (see detail); failed: Meta said no (see meta_error); "
                    "dry_run: nothing changed, `after` is what would have been set.",
        examples=["ok"],
    )
    detail: str = Field(default="", description="Human-readable explanation.", examples=["daily budget 10000 -> 11500"])
    guardrail: str | None = Field(
        default=None, description="Which guardrail refused it (budget_step, budget_changes_per_hour, "
                                  "spend_floor, object_status, stale_decision; hard limits: hard_max_budget, "
                                  "daily_ceiling, budget_increases_per_week; no_usable_rows: an audience "
                                  "sync without a row that identifies anyone; creative rotation: ad_not_active, "
                                  "reserve_not_paused, reserve_not_ready, not_in_adset, no_active_ad; "
                                  "changed_elsewhere: a retried "
                                  "command found the object changed since its earlier attempt (e.g. in Ads "
                                  "Manager) and was abandoned, nothing applied; for a rebalance also an object "
                                  "whose budget is not the one the decision was based on; lead forms: "
                                  "page_not_watched, page_token_missing, operator_only).",
    )
    forced: bool = Field(
        default=False, description="Applied (or would be) with `force`: the soft guardrails were skipped.",
    )
    meta_error: MetaErrorInfo | None = Field(default=None, description="Meta's error when failed.")
    object_id: str | None = Field(default=None, description="The object acted on.")
    account_id: str | None = None
    currency: str | None = Field(default=None, examples=["USD"])
    created_ids: dict[str, str] = Field(
        default_factory=dict, description="Objects created (campaign, adset, creative, ad).",
    )
    rolled_back: dict[str, str] = Field(
        default_factory=dict, description="After a failed create: objects and what became of them "
                                          "(`deleted` or `paused`, or `left` if neither worked).",
    )
    before: dict[str, Any] = Field(default_factory=dict, description="Values read from Meta before acting.")
    after: dict[str, Any] = Field(default_factory=dict, description="Values set (or that would be set).")
    counts: dict[str, int] = Field(
        default_factory=dict,
        description="Audience syncs: leads (in the definition), rows_sent, rows_removed, rows_dropped (no usable "
                    "identifier), members, Meta's approximate_count_lower_bound / _upper_bound once it shows "
                    "(hours later); lookalikes: seed_size.",
    )

    @field_validator("before", "after")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_finite(value)
        return value
