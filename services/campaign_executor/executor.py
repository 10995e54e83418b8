"""Apply one CampaignCommand to Meta safely: record, lock, re-read, check guardrails, act, record the outcome.

Exactly-once effect per command_id:
* the command's row is written first; its final status, the message claim and the CommandResult (outbox) are
  written in one transaction at the end, only if the row has no outcome yet;
* before touching Meta the attempt commits a `plan` (status `applying`) with the absolute values it will set,
  so an attempt that crashed midway is finished by the next one with the same values: a `+15 %` is never
  applied on top of itself;
* commands on the same object are serialized by an advisory lock, so two deliveries never race.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg

from contracts.commands import (
    ChangeBudgetCommand,
    CommandResult,
    CreateCampaignCommand,
    MetaErrorInfo,
    SetBudgetCommand,
    UploadAudienceCommand,
)
from contracts.messages import CampaignCommandMessage
from services.campaign_executor import audiences, logic, store
from services.campaign_executor.logic import BudgetFacts, Guardrails, ObjectState, Refusal
from shared.graph import BatchRequest, GraphClient
from shared.graph.client import encode_params
from shared.graph.errors import (
    AuthError,
    GraphError,
    ThrottledError,
    TransientError,
    classify_error,
)
from shared.messaging import PermanentError, RetryLater
from shared.money import format_money, parse_minor, to_minor

logger = logging.getLogger(__name__)

OBJECT_FIELDS = "id,name,status,effective_status,account_id"
BUDGET_FIELDS = "daily_budget,lifetime_budget"  # campaigns and ad sets: an Ad has no budget (Meta answers #100)
THROTTLE_FALLBACK_SECONDS = 60.0


class CommandFailed(Exception):
    """Meta refused the change for a reason retrying cannot fix: the result is `failed`."""

    def __init__(self, error: GraphError, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or str(error))
        self.error = error
        self.detail = detail
        self.extra = extra


@dataclass
class Outcome:
    status: str
    detail: str = ""
    guardrail: str | None = None
    error: GraphError | None = None
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    created_ids: dict[str, str] = field(default_factory=dict)
    rolled_back: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    currency: str | None = None
    account_id: str | None = None


def meta_error(error: GraphError | None) -> MetaErrorInfo | None:
    if error is None:
        return None
    return MetaErrorInfo(code=error.code, subcode=error.subcode, fbtrace_id=error.fbtrace_id,
                         message=error.message[:1000], user_title=error.user_title, user_message=error.user_message)


def audit_payload(command: Any) -> dict[str, Any]:
    """The command as stored in the audit log: audience rows replaced by counts and a digest."""
    if isinstance(command, UploadAudienceCommand):
        data = command.model_dump(mode="json", exclude={"rows"})
        data["rows_count"] = len(command.rows)
        return data
    return command.model_dump(mode="json")


def _refused(refusal: Refusal, **kw: Any) -> Outcome:
    return Outcome("refused", refusal.detail, guardrail=refusal.guardrail, **kw)


class Executor:
    """Runs commands. One per service process; stateless apart from a currency cache."""

    def __init__(self, pool: asyncpg.Pool, graph: GraphClient, guards: Guardrails, *, consumer_name: str,
                 max_wait: float = 10.0) -> None:
        self.pool = pool
        self.graph = graph
        self.guards = guards
        self.consumer_name = consumer_name
        self.max_wait = max_wait
        self._currencies: dict[str, str] = {}

    # -- entry point ---------------------------------------------------------------------------------------------

    async def execute(self, message: CampaignCommandMessage) -> CommandResult | None:
        """Handle one delivery. Returns the result recorded now, or None for a command already finished.

        Raises:
            RetryLater: Meta throttled us, or another worker holds the object.
            PermanentError: our token is broken (parked for replay once fixed).
            TransientError and others: retried with backoff by the consumer middleware.
        """
        command = message.payload.root
        ids = {"command_id": str(command.command_id), "kind": command.kind, "message_id": str(message.message_id)}
        lock_key = self._lock_key(command)
        async with self.pool.acquire() as conn, store.object_lock(conn, lock_key):
            row = await store.begin(
                conn, command_id=command.command_id, message_id=message.message_id, kind=command.kind,
                account_id=getattr(command, "account_id", None), object_id=_object_id(command),
                level=getattr(command, "level", None), dry_run=command.dry_run, force=command.force,
                requested_by=command.requested_by, reason=command.reason, payload=audit_payload(command),
            )
            if row["status"] in store.FINAL:
                logger.info("command %s already %s: not acting again", command.command_id, row["status"],
                            extra=ids)
                return None
            plan = _json(row["plan"])
            try:
                outcome = await self._run(conn, command, row, plan)
            except ThrottledError as exc:
                delay = exc.retry_after if exc.retry_after is not None else THROTTLE_FALLBACK_SECONDS
                raise RetryLater(f"Meta throttled ({exc.kind}, code={exc.code}/{exc.subcode})", delay=delay) from None
            except AuthError as exc:
                raise PermanentError(f"Meta token rejected (code={exc.code}/{exc.subcode}): fix and replay") from None
            except CommandFailed as exc:
                outcome = Outcome("failed", exc.detail or exc.error.message, error=exc.error, **exc.extra)
            result = CommandResult(
                command_id=command.command_id, kind=command.kind, status=outcome.status, detail=outcome.detail,
                guardrail=outcome.guardrail, meta_error=meta_error(outcome.error), object_id=_object_id(command),
                account_id=outcome.account_id or getattr(command, "account_id", None), currency=outcome.currency,
                created_ids=outcome.created_ids, rolled_back=outcome.rolled_back, before=outcome.before,
                after=outcome.after, counts=outcome.counts,
            )
            if not await store.finish(conn, consumer_name=self.consumer_name, message=message, result=result):
                return None
            logger.info("command %s %s: %s", command.command_id, result.status, result.detail, extra=ids)
            return result

    @staticmethod
    def _lock_key(command: Any) -> str:
        if isinstance(command, UploadAudienceCommand):
            return f"audience:{command.audience_id}"
        if isinstance(command, CreateCampaignCommand):
            return f"command:{command.command_id}"
        return f"object:{command.object_id}"

    async def _run(self, conn: asyncpg.Connection, command: Any, row: asyncpg.Record,
                   plan: dict[str, Any] | None) -> Outcome:
        if command.kind in logic.STATUS_OF_KIND:
            return await self._status(conn, command, plan)
        if command.kind in logic.BUDGET_KINDS:
            return await self._budget(conn, command, plan)
        if isinstance(command, CreateCampaignCommand):
            return await self._create(conn, command, row, plan)
        if isinstance(command, UploadAudienceCommand):
            return await self._upload(conn, command)
        raise PermanentError(f"unsupported command kind {command.kind}")

    # -- reads ---------------------------------------------------------------------------------------------------

    async def read_object(self, object_id: str, account_id: str | None, level: str) -> tuple[ObjectState, str]:
        """The object as Meta has it now, and its account currency (one batch when the account is known).

        Asks only for fields the node type has: budgets on campaigns and ad sets, never on ads."""
        fields = OBJECT_FIELDS if level == "ad" else f"{OBJECT_FIELDS},{BUDGET_FIELDS}"
        if account_id and account_id not in self._currencies:
            results = await self.graph.batch(
                [BatchRequest.get(object_id, {"fields": fields}),
                 BatchRequest.get(account_id, {"fields": "currency"})],
                max_wait=self.max_wait,
            )
            body = _unwrap(results[0])
            self._currencies[account_id] = str(_unwrap(results[1])["currency"])
        else:
            body = await self._call(self.graph.get(object_id, {"fields": fields}, max_wait=self.max_wait))
        obj = ObjectState.from_graph(body)
        return obj, await self.currency(obj.account_id or account_id or "")

    async def currency(self, account_id: str) -> str:
        if account_id not in self._currencies:
            body = await self._call(self.graph.get(account_id, {"fields": "currency"}, max_wait=self.max_wait))
            self._currencies[account_id] = str(body["currency"])
        return self._currencies[account_id]

    async def spent(self, object_id: str, budget: str, currency: str) -> int | None:
        """Minor units spent today (daily) or over the object's life (lifetime); None when unknown."""
        preset = "today" if budget == "daily" else "maximum"
        try:
            body = await self.graph.get(f"{object_id}/insights", {"fields": "spend", "date_preset": preset},
                                        max_wait=self.max_wait)
        except (ThrottledError, AuthError):
            raise
        except GraphError:
            logger.warning("spend of %s unavailable; spend floor not checked", object_id)
            return None
        rows = body.get("data") or []
        if not rows:
            return 0
        return sum(to_minor(str(r.get("spend") or "0"), currency) for r in rows)

    async def account_daily_total(self, account_id: str) -> int:
        """Daily budgets of active campaigns (campaign budget) and active ad sets in the account."""
        total = 0
        for edge in ("campaigns", "adsets"):
            params = {"fields": "daily_budget,effective_status", "effective_status": ["ACTIVE"], "limit": 500}
            async for item in self.graph.paginate(f"{account_id}/{edge}", params, max_wait=self.max_wait):
                if item.get("effective_status") == "ACTIVE":
                    total += parse_minor(item.get("daily_budget")) or 0
        return total

    async def _call(self, awaitable: Any) -> dict[str, Any]:
        """Await a Graph call; Meta's "no" (validation, permission, not found) becomes CommandFailed."""
        try:
            return await awaitable
        except (ThrottledError, AuthError, TransientError):
            raise
        except GraphError as exc:
            raise CommandFailed(exc) from None

    # -- pause / unpause / archive / delete ----------------------------------------------------------------------

    async def _status(self, conn: asyncpg.Connection, command: Any, plan: dict[str, Any] | None) -> Outcome:
        obj, currency = await self.read_object(command.object_id, command.account_id, command.level)
        target = logic.STATUS_OF_KIND[command.kind]
        before = {"status": obj.status, "effective_status": obj.effective_status}
        common = {"before": before, "currency": currency, "account_id": obj.account_id}
        if obj.status == target:
            return Outcome("ok", f"already {target}: nothing to do", after={"status": target}, **common)
        refusal = logic.object_status_refusal(command.kind, obj) if plan is None else None
        if refusal and not command.force:
            return _refused(refusal, **common)
        if command.dry_run:
            return Outcome("dry_run", f"would set status {obj.status} -> {target}", after={"status": target}, **common)
        await store.mark_applying(conn, command.command_id, {"status": target})
        if command.kind == "delete":
            await self._call(self.graph.delete(command.object_id, max_wait=self.max_wait))
        else:
            await self._call(self.graph.post(command.object_id, {"status": target}, max_wait=self.max_wait,
                                             idempotent=True))
        return Outcome("ok", f"status {obj.status} -> {target}", after={"status": target}, **common)

    # -- budgets -------------------------------------------------------------------------------------------------

    async def _budget(self, conn: asyncpg.Connection, command: SetBudgetCommand | ChangeBudgetCommand,
                      plan: dict[str, Any] | None) -> Outcome:
        obj, currency = await self.read_object(command.object_id, command.account_id, command.level)
        field_name = f"{command.budget}_budget"
        current = obj.budget(command.budget)
        common = {"currency": currency, "account_id": obj.account_id,
                  "before": {field_name: current, "status": obj.status}}
        if plan is not None:
            # An earlier attempt decided and may have applied it: finish that, do not decide again.
            target = int(plan[field_name])
            if current != target:
                await self._set_budget(command.object_id, field_name, target)
            return Outcome("ok", f"{field_name} -> {format_money(target, currency)} (completed an interrupted "
                                 "attempt)", after={field_name: target}, **common)
        refusal = logic.object_status_refusal(command.kind, obj)
        if refusal and not command.force:
            return _refused(refusal, **common)
        if current is None:
            return _refused(Refusal("no_budget", f"object has no {field_name} (budget lives elsewhere)"), **common)
        target = logic.budget_target(command, current)
        change = f"{field_name} {format_money(current, currency)} -> {format_money(target, currency)}"
        if target == current:
            return Outcome("ok", f"{change}: nothing to do", after={field_name: target}, **common)
        if not command.force:
            facts = BudgetFacts(
                current=current, target=target, currency=currency,
                changes_last_hour=await store.budget_changes_last_hour(conn, command.object_id, command.command_id),
                spent=await self.spent(command.object_id, command.budget, currency) if target < current else None,
                account_daily_total=(
                    await self.account_daily_total(obj.account_id)
                    if self.guards.daily_budget_ceiling_minor is not None and target > current
                    and command.budget == "daily" else None
                ),
            )
            refusal = logic.budget_refusal(command, facts, self.guards)
            if refusal:
                return _refused(refusal, after={field_name: target}, **common)
        if command.dry_run:
            return Outcome("dry_run", f"would set {change}", after={field_name: target}, **common)
        await store.mark_applying(conn, command.command_id, {field_name: target, "from": current})
        await self._set_budget(command.object_id, field_name, target)
        return Outcome("ok", change, after={field_name: target}, **common)

    async def _set_budget(self, object_id: str, field_name: str, target: int) -> None:
        # Setting an absolute value is idempotent, so a network error after sending may be retried.
        await self._call(self.graph.post(object_id, {field_name: target}, max_wait=self.max_wait, idempotent=True))

    # -- create campaign -----------------------------------------------------------------------------------------

    async def _create(self, conn: asyncpg.Connection, command: CreateCampaignCommand, row: asyncpg.Record,
                      plan: dict[str, Any] | None) -> Outcome:
        account = command.account_id
        currency = await self.currency(account)
        common = {"currency": currency, "account_id": account}
        if plan is not None:
            return await self._recover_create(command, row, common)
        if not command.force and self.guards.daily_budget_ceiling_minor is not None and command.status == "ACTIVE":
            refusal = logic.create_ceiling_refusal(command, await self.account_daily_total(account), currency,
                                                   self.guards)
            if refusal:
                return _refused(refusal, **common)
        operations = logic.create_operations(command)
        planned = {name: {k: v for k, v in params.items() if k != "targeting"} for name, _, params in operations}
        if command.dry_run:
            return Outcome("dry_run", f"would create campaign, ad set, creative and ad ({command.status})",
                           after=planned, **common)
        await store.mark_applying(conn, command.command_id, {"create": True})
        created, failure = await self._run_create_batch(operations)
        if failure is None:
            return Outcome("ok", f"created campaign {created['campaign']} with ad set, creative and ad "
                                 f"({command.status})", created_ids=created, after=planned, **common)
        rolled_back = await self._roll_back(created)
        left = [name for name, fate in rolled_back.items() if fate == "left"]
        if isinstance(failure[1], (TransientError, ThrottledError)) and not left:
            # Nothing of this attempt remains at Meta: the next attempt may create afresh.
            await store.mark_not_applied(conn, command.command_id)
            raise failure[1]
        step, error = failure
        fates = ", ".join(f"{name} {created[name]} {fate}" for name, fate in rolled_back.items())
        detail = f"create failed at the {step} step: {error.message}; {fates or 'nothing was created'}"
        raise CommandFailed(error, detail, created_ids=created, rolled_back=rolled_back, **common)

    async def _run_create_batch(self, operations: list[tuple[str, str, dict[str, Any]]]
                                ) -> tuple[dict[str, str], tuple[str, GraphError] | None]:
        """Run the four creates as one batch with dependencies; returns created ids and the first failure.

        Built here rather than with `GraphClient.batch`: that one URL-encodes bodies, which hides the
        `{result=name:$.id}` references from Graph, and it retries failed items in a new batch, where the names
        they refer to no longer exist.
        """
        version = self.graph.api_version
        ops = [
            {"method": "POST", "relative_url": f"{version}/{path}", "name": name,
             "omit_response_on_success": False,
             "body": urlencode(encode_params(params), safe="{}:$=,[]\"")}
            for name, path, params in operations
        ]
        response = await self.graph.request("POST", "", data={"batch": ops, "include_headers": True},
                                            max_wait=self.max_wait, idempotent=False, form_token=True)
        items = response.get("data") if isinstance(response.get("data"), list) else []
        created: dict[str, str] = {}
        failure: tuple[str, GraphError] | None = None
        for position, (name, path, _params) in enumerate(operations):
            item = items[position] if position < len(items) else None
            error: GraphError | None
            if not isinstance(item, Mapping):
                error = TransientError("batch item timed out (null result)")
            else:
                headers = {h["name"]: h["value"] for h in item.get("headers") or [] if isinstance(h, Mapping)}
                self.graph.observe_headers(headers, path, None)
                body = _json(item.get("body"))
                code = item.get("code")
                if isinstance(code, int) and code < 400 and isinstance(body, Mapping) and body.get("id"):
                    created[name] = str(body["id"])
                    continue
                error = classify_error(body, http_status=code if isinstance(code, int) else None)
            if failure is None:
                failure = (name, error)
        return created, failure

    async def _roll_back(self, created: Mapping[str, str]) -> dict[str, str]:
        """Delete what a failed create left (children first); pause what cannot be deleted."""
        order = [name for name in ("ad", "creative", "adset", "campaign") if name in created]
        if not order:
            return {}
        results = await self.graph.batch([BatchRequest.delete(created[name]) for name in order],
                                         max_wait=self.max_wait)
        fates: dict[str, str] = {}
        for name, result in zip(order, results, strict=True):
            if result.ok:
                fates[name] = "deleted"
                continue
            fates[name] = "left"
            if name != "creative":
                try:
                    await self.graph.post(created[name], {"status": "PAUSED"}, max_wait=self.max_wait,
                                          idempotent=True)
                    fates[name] = "paused"
                except GraphError:
                    logger.exception("could not delete nor pause %s %s after a failed create", name, created[name])
        return fates

    async def _recover_create(self, command: CreateCampaignCommand, row: asyncpg.Record,
                              common: dict[str, Any]) -> Outcome:
        """An earlier attempt sent the create batch and did not finish: find what it made, pause it, report.

        Re-creating could duplicate a campaign that is live; pausing what exists and asking a human is safer.
        """
        since = (row["applying_at"] or datetime.now(UTC)) - timedelta(minutes=2)
        params = {"fields": "id,name,status,created_time", "limit": 100,
                  "filtering": [{"field": "name", "operator": "EQUAL", "value": command.campaign.name}]}
        found: dict[str, str] = {}
        async for item in self.graph.paginate(f"{command.account_id}/campaigns", params, max_wait=self.max_wait):
            created = _parse_time(item.get("created_time"))
            if item.get("name") == command.campaign.name and (created is None or created >= since):
                found[f"campaign:{item['id']}"] = str(item["id"])
        fates: dict[str, str] = {}
        for key, object_id in found.items():
            await self._call(self.graph.post(object_id, {"status": "PAUSED"}, max_wait=self.max_wait,
                                             idempotent=True))
            fates[key] = "paused"
        detail = ("an earlier attempt was interrupted after sending the create; "
                  + (f"found and paused {', '.join(found.values())} for review" if found
                     else "nothing was found at Meta; re-send the command with a new command_id"))
        return Outcome("failed", detail, created_ids=found, rolled_back=fates, **common)

    # -- audiences -----------------------------------------------------------------------------------------------

    async def _upload(self, conn: asyncpg.Connection, command: UploadAudienceCommand) -> Outcome:
        audience = await self._call(self.graph.get(command.audience_id, {"fields": "id,name,subtype,account_id"},
                                                   max_wait=self.max_wait))
        prepared = audiences.prepare_rows(command.schema_, command.rows, command.default_country)
        chunks = list(audiences.batches(prepared.rows))
        counts = {"rows": len(prepared.rows), "requests": len(chunks), "values_hashed": prepared.values_hashed,
                  "values_passed_through": prepared.values_passed_through,
                  "values_dropped": prepared.values_dropped}
        await conn.execute(
            "update campaign_commands set payload = payload || $2::jsonb where command_id = $1",
            command.command_id, {"rows_digest": prepared.digest, **{k: v for k, v in counts.items() if k != "rows"}},
        )
        edge = "usersreplace" if command.mode == "replace" else "users"
        before = {"approximate_count": audience.get("approximate_count_lower_bound"), "name": audience.get("name")}
        if command.dry_run:
            return Outcome("dry_run", f"would send {len(prepared.rows)} rows in {len(chunks)} requests to /{edge}",
                           counts=counts, before=before)
        await store.mark_applying(conn, command.command_id, {"edge": edge})
        # A new session per attempt: a retried replace starts over at batch_seq 1 (meta-api-facts §12.2).
        session_id = secrets.randbits(62) or 1
        last: dict[str, Any] = {}
        for seq, chunk in enumerate(chunks, start=1):
            last = await self._call(self.graph.post(
                f"{command.audience_id}/{edge}",
                {
                    "payload": {"schema": list(command.schema_), "data": chunk},
                    "session": {"session_id": session_id, "batch_seq": seq, "last_batch_flag": seq == len(chunks),
                                "estimated_num_total": len(prepared.rows)},
                },
                max_wait=self.max_wait,
            ))
        counts["num_received"] = int(last.get("num_received") or 0)
        counts["num_invalid_entries"] = int(last.get("num_invalid_entries") or 0)
        counts["session_id"] = session_id
        return Outcome("ok", f"sent {len(prepared.rows)} rows in {len(chunks)} requests to /{edge} "
                             f"(session {session_id})", counts=counts, before=before)


def _object_id(command: Any) -> str | None:
    return getattr(command, "object_id", None) or getattr(command, "audience_id", None)


def _unwrap(result: Any) -> dict[str, Any]:
    if result.error is not None:
        if isinstance(result.error, (ThrottledError, AuthError, TransientError)):
            raise result.error
        raise CommandFailed(result.error)
    return result.body


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return None
