"""Plain decisions of the lead fetcher: parsing Meta's lead, ids, backfill windows, error outcomes.

Nothing here talks to the broker, the database or Meta; `store.py`, `reader.py` and `backfill.py` do.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from contracts.alerts import AlertRaised
from contracts.leads import LeadCaptured
from shared.graph.errors import (
    AuthError,
    GraphError,
    InvalidRequestError,
    PermissionDeniedError,
    PolicyBlockedError,
    ThrottledError,
)
from shared.messaging import PermanentError, RetryLater
from shared.page_tokens import configured_forms_token

if TYPE_CHECKING:
    from pydantic import SecretStr

    from shared.settings import MetaSettings

# Ask for every field we store: Meta's default answer is a subset (docs/meta-api.md §7.2).
# The Lead node has the ad, ad set and campaign names but not the form's: that one is the form node's `name`
# (`FORM_FIELDS`, read once per form).
LEAD_FIELDS = (
    "id,created_time,field_data,ad_id,ad_name,adset_id,adset_name,campaign_id,campaign_name,form_id,is_organic,"
    "platform,custom_disclaimer_responses"
)
FORM_FIELDS = "id,name"
SERVICE = "lead_fetcher"
# Meta deletes leads after about 90 days (docs/meta-api.md §7.4): a read refused for a lead older than that can
# never succeed, so it is parked instead of retried.
LEAD_RETENTION = timedelta(days=90)
# Used when Meta throttles without telling us for how long (the client normally fills `retry_after` in).
THROTTLE_FALLBACK_SECONDS = 60.0
# A throttled lead is looked at again at least this often, even when the client projects a longer wait (it paces
# by the leadgen BUC's 24 h window): a re-check of a still-blocked scope costs no Graph call, a lead a day late
# costs a client.
THROTTLE_MAX_DELAY_SECONDS = 900.0
_REDELIVERED_NAMESPACE = uuid.UUID("a3c1f0d2-7b5e-4f8a-9d61-2e4b8c7f0a95")


@dataclass(frozen=True)
class Lead:
    """One lead as we store it. `fields` and `raw` hold PII: never log them."""

    leadgen_id: str
    page_id: str
    form_id: str | None
    ad_id: str | None
    adset_id: str | None
    campaign_id: str | None
    created_time: datetime
    is_organic: bool
    platform: str | None
    fields: dict[str, Any]
    custom_disclaimer_responses: list[Any]
    raw: dict[str, Any]
    source: str
    form_name: str | None = None

    def __repr__(self) -> str:  # answers stay out of reprs, tracebacks and assertion messages
        return f"Lead(leadgen_id={self.leadgen_id!r}, page_id={self.page_id!r}, form_id={self.form_id!r})"

    def captured(self) -> LeadCaptured:
        return LeadCaptured(
            leadgen_id=self.leadgen_id,
            page_id=self.page_id,
            form_id=self.form_id,
            ad_id=self.ad_id,
            adset_id=self.adset_id,
            campaign_id=self.campaign_id,
            created_time=self.created_time,
            is_organic=self.is_organic,
            platform=self.platform,
        )


def redelivered_message_id(command_id: uuid.UUID) -> uuid.UUID:
    """The id of the LeadCaptured a `RedeliverLead` command produces: the same command (redelivered) adds none."""
    return uuid.uuid5(_REDELIVERED_NAMESPACE, str(command_id))


def parse_meta_time(value: Any) -> datetime:
    """Meta's `2026-11-22T08:49:14+0000` (or a Unix timestamp) as an aware datetime.

    Raises:
        ValueError: missing, unparseable, or a number no datetime can hold (1e20, infinity).
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("created_time is not a plausible Unix time") from None
    if not isinstance(value, str) or not value:
        raise ValueError("created_time missing or not a string")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def flatten_answers(field_data: Any) -> dict[str, Any]:
    """`field_data` [{name, values: [...]}] as question key -> first value (None when no value was given)."""
    out: dict[str, Any] = {}
    if not isinstance(field_data, Sequence) or isinstance(field_data, str):
        return out
    for item in field_data:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            continue
        values = item.get("values")
        if isinstance(values, Sequence) and not isinstance(values, str):
            out[item["name"]] = values[0] if values else None
        else:
            out[item["name"]] = values
    return out


def _id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def parse_lead(raw: Mapping[str, Any], *, page_id: str, source: str, leadgen_id: str | None = None) -> Lead:
    """Meta's lead object (single read or bulk read, same fields) as a `Lead`.

    Raises:
        ValueError: the object has no id or no usable created_time.
    """
    lead_id = _id(raw.get("id")) or leadgen_id
    if not lead_id:
        raise ValueError("lead object without id")
    disclaimers = raw.get("custom_disclaimer_responses")
    return Lead(
        leadgen_id=lead_id,
        page_id=str(page_id),
        form_id=_id(raw.get("form_id")),
        ad_id=_id(raw.get("ad_id")),
        adset_id=_id(raw.get("adset_id")),
        campaign_id=_id(raw.get("campaign_id")),
        created_time=parse_meta_time(raw.get("created_time")),
        is_organic=raw.get("is_organic") is True,
        platform=raw.get("platform") if isinstance(raw.get("platform"), str) else None,
        fields=flatten_answers(raw.get("field_data")),
        custom_disclaimer_responses=list(disclaimers) if isinstance(disclaimers, list) else [],
        raw=dict(raw),
        source=source,
    )


def access_alert_code(error: GraphError) -> str | None:
    """The alert code of an error that needs a human to fix access, else None."""
    if isinstance(error, AuthError):
        return "token_invalid"
    if isinstance(error, PermissionDeniedError):
        return "lead_access_denied"
    if isinstance(error, PolicyBlockedError):
        return "lead_access_blocked"
    return None


def access_alert(code: str, page_id: str, error: GraphError) -> AlertRaised:
    """One alert for a Page whose leads cannot be read, saying what to do. No token, no lead data."""
    meta = f"Meta error code={error.code} subcode={error.subcode} fbtrace_id={error.fbtrace_id}"
    if code == "token_invalid":
        summary = f"The Page access token was refused while reading leads of Page {page_id} ({meta})."
        fix = ("Generate a new long-lived Page (or system-user) token with leads_retrieval, pages_manage_ads, "
               "pages_read_engagement and ads_management, set META_PAGE_ACCESS_TOKEN, and restart lead_fetcher. "
               "Waiting leads are fetched automatically once the token works.")
    elif code == "lead_access_blocked":
        summary = f"Meta temporarily blocked lead reads for Page {page_id} ({meta})."
        fix = "Check the Page's and the app's standing in Business Support Home; leads are retried automatically."
    else:
        summary = f"Meta refused to return leads of Page {page_id}: missing permission ({meta})."
        fix = ("Grant the app leads_retrieval and pages_manage_ads, make sure the token's user has an Advertiser "
               "(or higher) task on the Page, and in Leads Access Manager (Business Settings > Integrations > "
               "Leads Access) give leadwire's app/system user access. Waiting leads are fetched automatically "
               "once access is restored.")
    return AlertRaised(severity="critical", code=code, summary=summary, service=SERVICE, subject=page_id, fix=fix)


def held_reason(error: ThrottledError) -> str:
    """Why lead reads wait, for the held-capture alert (ids and codes only)."""
    scope = error.scope or error.kind
    if error.code is not None:
        return f"Meta throttled lead reads (code {error.code}/{error.subcode}, rate-limit scope {scope})"
    return (f"Meta's usage figures put rate-limit scope {scope} near its limit, so leadwire paces lead reads to "
            "stay under it (it re-checks Meta's figures with one call every META_USAGE_PROBE_SECONDS)")


HELD_KIND = "lead_capture_held"  # the incident's kind: its alerts are `lead_capture_held_opened` / `_resolved`
HELD_FIX = ("Nothing is lost: waiting leads are read automatically. If it lasts, check what else uses this Page's "
            "token (Meta's leadgen quota is per Page: 4800 calls x leads of the last 90 days per 24 h), run "
            "`leadwire doctor`, and see /metrics `graph_usage_percent` for the scope.")


def held_dependency(page_id: str) -> str:
    """The incident's dependency: lead reads of one Page (its alerts' subject)."""
    return f"meta_lead_reads:{page_id}"


def held_summary(page_id: str, reason: str, *, held_seconds: float, expected: datetime) -> str:
    """A Page's lead capture held back: why, for how long, and when it should resume."""
    return (f"Lead capture for Page {page_id} has been held back for {held_seconds / 60:.0f} min: {reason}. "
            f"Leads wait in the queue and are read when Meta allows; expected to resume around "
            f"{expected.strftime('%Y-%m-%d %H:%M')} UTC.")


def held_resolved_summary(page_id: str, *, held_seconds: float) -> str:
    return (f"Lead capture for Page {page_id} resumed after being held back for about {held_seconds / 60:.0f} min; "
            "the leads that waited are being read.")


def lead_is_expired(created_time: int | None, now: datetime) -> bool:
    """True when Meta no longer keeps the lead (older than the retention period). A created_time that is no
    plausible Unix time (milliseconds, 1e20) says nothing about the lead's age: not expired."""
    if created_time is None:
        return False
    try:
        created = datetime.fromtimestamp(created_time, UTC)
    except (OverflowError, OSError, ValueError):
        return False
    return now - created > LEAD_RETENTION


def read_outcome(error: GraphError) -> str:
    """The `leadwire_lead_reads_total` outcome of a failed lead read (same classes as `read_failure`)."""
    if isinstance(error, ThrottledError):
        return "throttled"
    if isinstance(error, InvalidRequestError):
        return "not_readable"
    if access_alert_code(error) is not None:
        return "access_refused"
    return "error"


def read_failure(error: GraphError, leadgen_id: str, *, access_retry_seconds: float,
                 expired: bool) -> RetryLater | PermanentError | GraphError:
    """What to raise in the handler for a failed lead read.

    - throttled (including the Page's leadgen quota, 80005): a delayed retry at the regain time, no attempt used;
    - the lead does not exist / cannot be read (100/33, invalid request): park with Meta's error;
    - token or permission problem: retry after `access_retry_seconds` without using attempts, so the lead flows
      as soon as access is fixed (the caller raises one alert per Page); parked once Meta has deleted the lead;
    - anything else (transient): the error itself, retried with backoff by the consumer middleware.
    """
    if isinstance(error, ThrottledError):
        delay = error.retry_after if error.retry_after is not None else THROTTLE_FALLBACK_SECONDS
        delay = min(delay, THROTTLE_MAX_DELAY_SECONDS)
        return RetryLater(f"lead {leadgen_id} read throttled: {error}", delay=delay, counts_attempt=False)
    if isinstance(error, InvalidRequestError):
        return PermanentError(f"lead {leadgen_id} cannot be read: {error}")
    if access_alert_code(error) is not None:
        if expired:
            return PermanentError(f"lead {leadgen_id} older than Meta's retention and unreadable: {error}")
        return RetryLater(f"lead {leadgen_id} access refused: {error}", delay=access_retry_seconds,
                          counts_attempt=False)
    return error


@dataclass(frozen=True)
class ScanWindow:
    """Lower bound (exclusive) of a form's scan and the watermark to store once it completed."""

    since: datetime
    until: datetime


def scan_window(
    watermark: datetime | None,
    now: datetime,
    *,
    overlap: timedelta,
    initial_days: int,
    since: datetime | None = None,
    max_days: int = 90,
) -> ScanWindow:
    """Where a form's backfill scan starts.

    Without a watermark: `initial_days` back. With one: the watermark minus `overlap` (Meta's listing and webhooks
    lag). An explicit `since` (operator's `--since`) wins when it reaches further back. Never before Meta's
    retention horizon.
    """
    start = now - timedelta(days=initial_days) if watermark is None else watermark - overlap
    if since is not None:
        start = min(start, since)
    horizon = now - timedelta(days=max_days)
    return ScanWindow(since=max(start, horizon), until=now)


def time_filter(since: datetime) -> list[dict[str, Any]]:
    """Meta's bulk-read filter for leads created after `since` (docs/meta-api.md §7.3)."""
    return [{"field": "time_created", "operator": "GREATER_THAN", "value": int(since.timestamp())}]


def page_token(meta: MetaSettings) -> SecretStr:
    """Lead data needs a Page or user (system-user) token (docs/meta-api.md §7.1): META_PAGE_ACCESS_TOKEN, else
    META_ACCESS_TOKEN."""
    return configured_forms_token(meta) or meta.access_token
