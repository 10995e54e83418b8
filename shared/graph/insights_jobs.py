"""Async insights report runs (docs/meta-api.md §9.4).

`POST /<object>/insights` → `report_run_id`; poll `GET /<id>` with backoff until `async_status == "Job Completed"`
and `async_percent_completion == 100`; read `GET /<id>/insights` pages. `Job Failed` → AsyncJobFailedError (v25+
error fields), `Job Skipped` → AsyncJobSkippedError. Report run ids expire after 30 days: do not store them long.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.graph.batch import BatchRequest
from shared.graph.errors import AsyncJobFailedError, AsyncJobSkippedError, GraphError, TransientError
from shared.graph.usage import Scope, account_in_path

if TYPE_CHECKING:
    from shared.graph.client import GraphClient, Token

logger = logging.getLogger(__name__)

COMPLETED = "Job Completed"
FAILED = "Job Failed"
SKIPPED = "Job Skipped"
STATUS_FIELDS = "id,async_status,async_percent_completion,error_code,error_subcode,error_message"


@dataclass(frozen=True)
class PollPolicy:
    """Polling backoff: first wait `initial`, multiplied by `factor` up to `maximum`; give up after `timeout`."""

    initial: float = 1.0
    factor: float = 1.5
    maximum: float = 30.0
    timeout: float = 3600.0  # Meta: a job can take up to an hour


def insights_scope(object_id: str, scope: Scope | None = None) -> Scope:
    base = scope or Scope()
    account = account_in_path(object_id)
    if account and not base.account:
        base = base + Scope.ad_account(account)
    return Scope(account=base.account, page=base.page, buc_type="ads_insights", keys=base.keys)


def check_status(report_run_id: str, status: Mapping[str, Any]) -> bool:
    """True when the run is done; raise for Failed/Skipped; False while it is still running."""
    state = status.get("async_status")
    if state == FAILED:
        raise AsyncJobFailedError(
            str(status.get("error_message") or "async report run failed"),
            report_run_id=report_run_id,
            code=_int(status.get("error_code")),
            subcode=_int(status.get("error_subcode")),
            user_title=_str(status.get("error_user_title")),
            user_message=_str(status.get("error_user_msg")),
        )
    if state == SKIPPED:
        raise AsyncJobSkippedError("async report run skipped (expired); resubmit", report_run_id=report_run_id)
    return state == COMPLETED and _float(status.get("async_percent_completion")) >= 100.0


async def start_report_run(
    client: GraphClient,
    object_id: str,
    params: Mapping[str, Any],
    *,
    token: Token = None,
    scope: Scope | None = None,
) -> str:
    """Start an async report; returns the `report_run_id`."""
    scope = insights_scope(object_id, scope)
    body = await client.post(f"{object_id}/insights", params, token=token, scope=scope, idempotent=True)
    run_id = body.get("report_run_id")
    if not isinstance(run_id, str) or not run_id:
        raise GraphError("insights POST returned no report_run_id")
    if scope.account:
        client.usage.learn_account(run_id, scope.account)
    return run_id


async def wait_for_report_run(
    client: GraphClient,
    report_run_id: str,
    *,
    token: Token = None,
    scope: Scope | None = None,
    poll: PollPolicy | None = None,
) -> dict[str, Any]:
    """Poll until the run completes; returns its last status object."""
    poll = poll or PollPolicy()
    scope = Scope(account=scope.account if scope else None, buc_type="ads_insights")
    delay = poll.initial
    waited = 0.0
    while True:
        status = await client.get(report_run_id, {"fields": STATUS_FIELDS}, token=token, scope=scope)
        if check_status(report_run_id, status):
            return status
        if waited >= poll.timeout:
            raise TransientError(f"report run {report_run_id} not done after {waited:.0f}s")
        logger.debug(
            "report run %s: %s %s%%", report_run_id, status.get("async_status"), status.get("async_percent_completion")
        )
        await client.sleep_backoff_fixed(delay)
        waited += delay
        delay = min(poll.maximum, delay * poll.factor)


def read_report_run(
    client: GraphClient,
    report_run_id: str,
    params: Mapping[str, Any] | None = None,
    *,
    token: Token = None,
    scope: Scope | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Every row of a completed run (`GET /<id>/insights`, cursor-paginated)."""
    scope = Scope(account=scope.account if scope else None, buc_type="ads_insights")
    return client.paginate(f"{report_run_id}/insights", params, token=token, scope=scope)


async def run_report(
    client: GraphClient,
    object_id: str,
    params: Mapping[str, Any],
    *,
    token: Token = None,
    scope: Scope | None = None,
    poll: PollPolicy | None = None,
    page_params: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Start, wait for and read one async report."""
    scope = insights_scope(object_id, scope)
    run_id = await start_report_run(client, object_id, params, token=token, scope=scope)
    await wait_for_report_run(client, run_id, token=token, scope=scope, poll=poll)
    return [row async for row in read_report_run(client, run_id, page_params, token=token, scope=scope)]


async def poll_report_runs(
    client: GraphClient,
    report_run_ids: Sequence[str],
    *,
    token: Token = None,
    scope: Scope | None = None,
) -> dict[str, dict[str, Any] | GraphError]:
    """Status of many runs in batch calls (50 per call): id → status object, or the item's error.

    A `Job Failed`/`Job Skipped` status is returned as AsyncJobFailedError/AsyncJobSkippedError, not raised,
    so one bad run does not hide the others.
    """
    scope = Scope(account=scope.account if scope else None, buc_type="ads_insights")
    requests = [BatchRequest.get(run_id, {"fields": STATUS_FIELDS}, scope=scope) for run_id in report_run_ids]
    results = await client.batch(requests, token=token)
    out: dict[str, dict[str, Any] | GraphError] = {}
    for run_id, result in zip(report_run_ids, results, strict=True):
        if result.error is not None:
            out[run_id] = result.error
            continue
        status = result.body if isinstance(result.body, dict) else {}
        try:
            check_status(run_id, status)
        except GraphError as exc:
            out[run_id] = exc
            continue
        out[run_id] = status
    return out


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
