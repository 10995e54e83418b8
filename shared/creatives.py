"""Creative rotation's shared vocabulary: which ad is a reserve creative, and in what order reserves are used.

The rules engine picks the reserve; the campaign executor re-checks it at execution. Both read it here, so the
tag cannot mean one thing to one and another to the other.

**How an ad is tagged as a reserve: its name contains ``[reserve]``** (any case, anywhere: ``[reserve] Crash -
video B``, ``Crash - video B [RESERVE]``). Chosen over Meta's ad labels (``adlabels``) because:

* the operator sets it where they already work (Ads Manager's name field, bulk rename), and sees it in every
  report and export, without an API call or a label to create first;
* leadwire already stores every ad's name (the insights poller's `ads` table), so no new field is read from Meta
  or stored, and the executor's re-check reads only fields every Ad has (``name``, ``status``);
* a name survives duplication in Ads Manager, which is how reserve variants are usually made.

A reserve is one *waiting*: PAUSED by the operator. Once rotation activated it, it is simply an active ad (the
tag stays in its name; it is not a reserve any more because it is not paused). An ad rotation took out of
delivery (fatigued) is never brought back as a reserve, even if its name carries the tag: the engine keeps the
list of retired ads from its action history.

Reserves of an ad set are used in name order (then by id): number them (``[reserve] 1 ...``, ``[reserve] 2 ...``)
to choose which comes first.
"""

from __future__ import annotations

RESERVE_TAG = "[reserve]"

# Effective statuses of a PAUSED ad that would deliver once set ACTIVE (Meta reports a paused ad's own status first;
# a disapproved, in-review or broken ad shows that instead, and activating it would not bring delivery back:
# docs/meta-api.md §11.2).
RESERVE_READY = frozenset({"PAUSED", "ADSET_PAUSED", "CAMPAIGN_PAUSED"})
# Effective statuses of an ACTIVE ad that delivers whenever its ad set and campaign do.
DELIVERING = frozenset({"ACTIVE", "ADSET_PAUSED", "CAMPAIGN_PAUSED"})


def is_reserve_name(name: str | None) -> bool:
    """Whether an ad's name tags it as a reserve creative."""
    return bool(name) and RESERVE_TAG in (name or "").casefold()


def reserve_order(name: str, ad_id: str) -> tuple[str, int, str]:
    """Sort key of reserves: by name (case-insensitive), then by id (Meta's ids grow with creation)."""
    return name.casefold(), len(ad_id), ad_id
