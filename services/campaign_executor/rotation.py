"""rotate_creative's decisions as plain functions: what to do with an ad set's ads as Meta shows them now.

The rules engine decided on the insights poller's copy of the ads, minutes or hours ago; `commands/rotation.py`
re-reads the ad set's ads and asks `next_step` what is still right to do. The order is fixed: the reserve is
activated first, the fatigued ad paused only once Meta shows the reserve active and able to deliver, so an
interrupted rotation leaves two active ads, never none.

An attempt commits its plan (`plan_of`) before the first change. A retry that finds the reserve ACTIVE and the ad
still ACTIVE finishes the pause; finds the ad PAUSED and the reserve ACTIVE: done; finds anything else than the
statuses the attempt started from or aimed at: someone changed the ad set elsewhere, the command is abandoned
(guardrail `changed_elsewhere`), as every other command does (`logic.changed_elsewhere`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.commands import RotateCreativeCommand
from services.campaign_executor.logic import Refusal
from shared.creatives import DELIVERING, RESERVE_READY, is_reserve_name

AD_FIELDS = "id,name,status,effective_status,account_id"  # fields every Ad has (no budget: Meta answers #100)
TARGET = {"ad": "PAUSED", "reserve": "ACTIVE"}


@dataclass(frozen=True)
class AdState:
    """An ad as just re-read from Meta."""

    id: str
    name: str
    status: str
    effective_status: str
    account_id: str = ""

    @classmethod
    def from_graph(cls, body: Mapping[str, Any]) -> AdState:
        account = str(body.get("account_id") or "")
        return cls(
            id=str(body["id"]), name=str(body.get("name") or ""),
            status=str(body.get("status") or body.get("configured_status") or ""),
            effective_status=str(body.get("effective_status") or body.get("status") or ""),
            account_id=account if account.startswith("act_") or not account else f"act_{account}",
        )

    def describe(self) -> str:
        return f"'{self.name}' ({self.id})" if self.name else self.id


@dataclass(frozen=True)
class Step:
    """What is left to do: activate the reserve (then pause the ad), or only pause the ad, or nothing."""

    activate: bool
    pause: bool

    @property
    def done(self) -> bool:
        return not (self.activate or self.pause)


def plan_of(ad: AdState, reserve: AdState) -> dict[str, Any]:
    """The plan an attempt commits before touching Meta: the statuses it aims at and those it starts from."""
    return {**TARGET, "from": {"ad": ad.status, "reserve": reserve.status}}


def before_of(ad: AdState | None, reserve: AdState | None, ads: Mapping[str, AdState]) -> dict[str, Any]:
    """What the result shows as read before acting."""
    out: dict[str, Any] = {"active_ads": sorted(a.id for a in ads.values() if a.status == "ACTIVE")}
    for role, found in (("ad", ad), ("reserve", reserve)):
        if found is not None:
            out[role] = {"status": found.status, "effective_status": found.effective_status, "name": found.name}
    return out


def next_step(
    command: RotateCreativeCommand, ad: AdState | None, reserve: AdState | None, plan: Mapping[str, Any] | None
) -> Step | Refusal:
    """What to do now, or why not. ``plan``: what an earlier attempt of this command committed (None: first)."""
    missing = [(role, i) for role, i, found in (("ad", command.object_id, ad),
                                                ("reserve", command.reserve_ad_id, reserve)) if found is None]
    if missing:
        role, object_id = missing[0]
        return Refusal("not_in_adset", f"the {role} {object_id} is no longer in ad set {command.adset_id} (moved, "
                                       "archived or deleted): nothing changed")
    assert ad is not None
    assert reserve is not None
    if plan is not None and isinstance(plan.get("from"), Mapping):
        started = plan["from"]
        for role, now in (("ad", ad), ("reserve", reserve)):
            if now.status not in (started.get(role), TARGET[role]):
                return _elsewhere(role, now, started.get(role))
        if ad.status == TARGET["ad"] and reserve.status == TARGET["reserve"]:
            return Step(activate=False, pause=False)
        if ad.status == TARGET["ad"]:
            # We never pause before the reserve is active: the ad was paused by someone else.
            return _elsewhere("ad", ad, started.get("ad"))
        if reserve.status == TARGET["reserve"]:
            # The earlier attempt activated the reserve and stopped before pausing the ad: finish it.
            return reserve_delivers(reserve, ad) or Step(activate=False, pause=True)
    if ad.status != "ACTIVE":
        return Refusal("ad_not_active", f"ad {ad.describe()} is {ad.status} at Meta, no longer ACTIVE: nothing to "
                                        "rotate, nothing changed")
    if reserve.status != "PAUSED":
        return Refusal("reserve_not_paused", f"reserve {reserve.describe()} is {reserve.status} at Meta, no longer "
                                             "PAUSED (someone used it): nothing changed")
    if not is_reserve_name(reserve.name):
        return Refusal("reserve_not_paused", f"ad {reserve.describe()} is no longer tagged [reserve] in its name: "
                                             "nothing changed")
    if reserve.effective_status not in RESERVE_READY:
        return Refusal("reserve_not_ready", f"reserve {reserve.describe()} shows {reserve.effective_status} at Meta: "
                                            "activating it would not bring delivery back, so ad "
                                            f"{ad.describe()} keeps running; nothing changed")
    return Step(activate=True, pause=True)


def reserve_delivers(reserve: AdState, ad: AdState) -> Refusal | None:
    """After activation: the reserve must be ACTIVE and able to deliver before the ad is paused, else the ad set
    would be left without an active ad."""
    if reserve.status == "ACTIVE" and reserve.effective_status in DELIVERING:
        return None
    return Refusal("no_active_ad", f"reserve {reserve.describe()} is {reserve.status} ({reserve.effective_status}) "
                                   f"at Meta after activation: ad {ad.describe()} was left running so that the ad "
                                   "set keeps an active ad")


def _elsewhere(role: str, now: AdState, started: Any) -> Refusal:
    return Refusal("changed_elsewhere", f"abandoned: the {role} {now.describe()} is {now.status} at Meta, neither the "
                                       f"{started} an earlier attempt started from nor its target {TARGET[role]}; "
                                       "the ad set was changed elsewhere (Ads Manager?) since, so the old plan is not "
                                       "applied")


def done_detail(command: RotateCreativeCommand, ad: AdState, reserve: AdState) -> str:
    return (f"ad set {command.adset_id}: reserve {reserve.describe()} PAUSED -> ACTIVE, then ad {ad.describe()} "
            "ACTIVE -> PAUSED")
