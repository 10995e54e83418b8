"""Creative rotation's plan (pure): which reserve ad takes a fatigued ad's place, or why the ad keeps running.

A rule at ad level with the action ``rotate_creative`` matched an ACTIVE ad (its frequency over a window, or its
falling CTR, crossed the rule's threshold). The ad is rotated out only together with a reserve: the next PAUSED ad
of the same ad set whose name carries ``[reserve]`` (shared/creatives.py: the tag, and why a name), in name
order, that no earlier rotation retired and no other rule touched in this run. With no reserve left, nothing is
paused and the decision says so: an ad set is never left without an active ad.

The executor re-checks all of it against Meta before acting (services/campaign_executor/rotation.py).
"""

from __future__ import annotations

from services.rules_engine.explain import describe
from services.rules_engine.guardrails import ActionPlan, Held, RunState
from services.rules_engine.model import Entity
from shared.creatives import is_reserve_name, reserve_order

NO_RESERVE = ("its ad set has no paused reserve creative (an ad with [reserve] in its name) to take its place, so it "
              "was not paused: an ad set is never left without an active ad")


def plan_rotation(rule_name: str, entity: Entity, run: RunState, status: str) -> Held | ActionPlan:
    """Rotate ``entity`` (an ad whose status in this run is ``status``) out for its ad set's next reserve."""
    if status != "ACTIVE":
        return Held("no_change", "it is not active")
    reserve = next_reserve(entity, run)
    if reserve is None:
        return Held("no_reserve", NO_RESERVE)
    run.status[entity.id] = "PAUSED"
    run.status[reserve.id] = "ACTIVE"
    run.mutated[reserve.id] = rule_name
    run.retired.add(entity.id)
    return ActionPlan(
        f"Rotated {describe(entity)} out for reserve ad '{reserve.name}' of the same ad set",
        action_fields={"reserve_id": reserve.id, "adset_id": entity.adset_id},
    )


def next_reserve(entity: Entity, run: RunState) -> Entity | None:
    """The PAUSED reserve ad of ``entity``'s ad set to activate next, or None."""
    if not entity.adset_id:
        return None
    candidates = [
        ad for ad in _ads_of(run, entity.adset_id)
        if ad.id != entity.id
        and is_reserve_name(ad.name)
        and run.status_of(ad) == "PAUSED"
        and ad.id not in run.retired
        and ad.id not in run.mutated
    ]
    return min(candidates, key=lambda ad: reserve_order(ad.name, ad.id), default=None)


def _ads_of(run: RunState, adset_id: str) -> list[Entity]:
    if run.ads_by_adset is None:
        run.ads_by_adset = {}
        for e in run.entities:
            if e.level == "ad" and e.adset_id:
                run.ads_by_adset.setdefault(e.adset_id, []).append(e)
    return run.ads_by_adset.get(adset_id, [])
