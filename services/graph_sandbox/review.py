"""Ad review, as Meta shows it (docs/meta-api.md §11.2): an ad's `effective_status` is `PENDING_REVIEW` while Meta
reviews it, `DISAPPROVED` when it was refused (`ad_review_feedback` says why) and `WITH_ISSUES` when something
stops it (`issues_info`). That state comes before the ad's own PAUSED and its parents' statuses, and none of those
ads delivers: no impressions, no spend, no leads, from the next hour, like a pause (`delivery.py`).

A new ad created through the API goes through review, as at Meta: it is `PENDING_REVIEW` (delivering nothing) for
`review_seconds` of the sandbox clock (default an hour; Meta: most ads within 24 hours), then approved
(`POST /_sandbox/review` `{"review_seconds": 0}` approves new ads at once).

Set through the control API (`POST /_sandbox/review/<ad-id>`, "Meta's reviewers"): `{"effective_status":
"DISAPPROVED", "ad_review_feedback": {...}}`, or `"APPROVED"` to clear it. Meta's wording of a refusal is the
reviewer's; the defaults here are the sandbox's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .delivery import Change, value_at

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
    now = sb.state.now()
    history: list[Change] = ad.extra.setdefault("history", [])
    # A decision now replaces a scheduled one (a new ad's approval at the end of its review).
    history[:] = [c for c in history if not (c.field == "review" and c.at > now)]
    before = value_at(ad, "review", now)
    if before != new:  # delivery reads the history: the hours under review deliver nothing
        history.append(Change(now, "review", before, new))
    ad.extra["review"] = new
    if new == "DISAPPROVED":
        ad.extra["review_feedback"] = {"ad_review_feedback": feedback or DEFAULT_FEEDBACK}
    elif new == "WITH_ISSUES":
        ad.extra["review_feedback"] = {"issues_info": feedback or [DEFAULT_ISSUE]}
    else:
        ad.extra.pop("review_feedback", None)


def submitted(sb: Sandbox, ad: Node) -> None:
    """A new ad: in review from now for `review_seconds`, then approved (call after `delivery.created`)."""
    seconds = float(sb.state.review_seconds)
    if seconds <= 0:
        return
    now = sb.state.now()
    history: list[Change] = ad.extra.setdefault("history", [])
    history += [Change(now, "review", None, "PENDING_REVIEW"), Change(now + seconds, "review", "PENDING_REVIEW", None)]
    ad.extra["review"] = None  # the value after the last change: approved once the review is over


def state_of(sb: Sandbox, ad: Node) -> str | None:
    """The ad's review state now, or None when approved (its statuses decide)."""
    if ad.kind != "ad" or ad.fields.get("status") in ("DELETED", "ARCHIVED"):
        return None
    state: str | None = value_at(ad, "review", sb.state.now())
    return state


def view_fields(sb: Sandbox, ad: Node) -> dict[str, Any]:
    """`ad_review_feedback` or `issues_info` while the ad is refused or has issues."""
    return dict(ad.extra.get("review_feedback") or {}) if state_of(sb, ad) in ("DISAPPROVED", "WITH_ISSUES") else {}
