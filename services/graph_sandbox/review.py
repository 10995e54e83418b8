"""Ad review, as Meta shows it (docs/meta-api.md §11.2): an ad's `effective_status` is `PENDING_REVIEW` while Meta
reviews it, `DISAPPROVED` when it was refused (`ad_review_feedback` says why) and `WITH_ISSUES` when something
stops it (`issues_info`). That state comes before the ad's own PAUSED and its parents' statuses, and none of those
ads delivers: no impressions, no spend, no leads, from the next hour, like a pause (`delivery.py`).

Set through the control API (`POST /_sandbox/review/<ad-id>`, "Meta's reviewers"): `{"effective_status":
"DISAPPROVED", "ad_review_feedback": {...}}`, or `"APPROVED"` to clear it. Meta's wording of a refusal is the
reviewer's; the defaults here are the sandbox's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .delivery import Change

if TYPE_CHECKING:
    from .core import Sandbox
    from .state import Node

REVIEW_STATES = ("PENDING_REVIEW", "DISAPPROVED", "WITH_ISSUES")
DEFAULT_FEEDBACK = {"global": {"Unrealistic outcomes": "Your ad makes claims about outcomes that are unlikely."}}
DEFAULT_ISSUE = {"level": "AD", "error_code": 0, "error_type": "HARD_ERROR", "error_summary": "Ad can't deliver",
                 "error_message": "Something about this ad stops it from delivering (sandbox issue)."}


def set_review(sb: Sandbox, ad: Node, state: str | None, feedback: Any = None) -> None:
    """Put `ad` in review `state` (None or "APPROVED": approved, delivering as its statuses allow)."""
    if ad.kind != "ad":
        raise ValueError(f"only ads are reviewed, not a {ad.kind}")
    if state not in (*REVIEW_STATES, "APPROVED", None):
        raise ValueError(f"effective_status must be one of {', '.join(REVIEW_STATES)} or APPROVED")
    new = None if state in (None, "APPROVED") else state
    before = ad.extra.get("review")
    if before != new:  # delivery reads the history: the hours under review deliver nothing
        ad.extra.setdefault("history", []).append(Change(sb.state.now(), "review", before, new))
    ad.extra["review"] = new
    if new == "DISAPPROVED":
        ad.extra["review_feedback"] = {"ad_review_feedback": feedback or DEFAULT_FEEDBACK}
    elif new == "WITH_ISSUES":
        ad.extra["review_feedback"] = {"issues_info": feedback or [DEFAULT_ISSUE]}
    else:
        ad.extra.pop("review_feedback", None)


def state_of(ad: Node) -> str | None:
    """The ad's review state, or None when approved (its statuses decide)."""
    if ad.kind != "ad" or ad.fields.get("status") in ("DELETED", "ARCHIVED"):
        return None
    state: str | None = ad.extra.get("review")
    return state


def view_fields(ad: Node) -> dict[str, Any]:
    """`ad_review_feedback` or `issues_info` while the ad is refused or has issues."""
    return dict(ad.extra.get("review_feedback") or {}) if state_of(ad) else {}
