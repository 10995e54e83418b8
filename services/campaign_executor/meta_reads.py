"""What the executor reads from Meta before it acts: the object as it is now, the account's currency (cached),
what was spent, and the account's active daily budgets. Meta's "no" to a read becomes `CommandFailed`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from services.campaign_executor.logic import CommandFailed, ObjectState
from shared.graph import BatchRequest, BatchResult, GraphClient
from shared.graph.errors import AuthError, GraphError, ThrottledError, TransientError
from shared.money import parse_minor, to_minor

logger = logging.getLogger(__name__)

OBJECT_FIELDS = "id,name,status,effective_status,account_id"
BUDGET_FIELDS = "daily_budget,lifetime_budget"  # campaigns and ad sets: an Ad has no budget (Meta answers #100)


def object_fields(level: str | None) -> str:
    """The fields to read of a campaign, ad set or ad (``level``; None when unknown) before acting on it: only those
    the node type has (budgets on campaigns and ad sets, never on ads)."""
    return OBJECT_FIELDS if level == "ad" else f"{OBJECT_FIELDS},{BUDGET_FIELDS}"


async def call(awaitable: Awaitable[Any]) -> Any:
    """Await a Graph call; Meta's "no" (validation, permission, not found) becomes CommandFailed.

    Throttling, a broken token and transient failures pass through: the worker retries or parks the command.
    """
    try:
        return await awaitable
    except (ThrottledError, AuthError, TransientError):
        raise
    except GraphError as exc:
        raise CommandFailed(exc) from None


def unwrap(result: BatchResult) -> Any:
    """A batch item's body, or its error raised as `call` would raise it."""
    if result.error is not None:
        if isinstance(result.error, (ThrottledError, AuthError, TransientError)):
            raise result.error
        raise CommandFailed(result.error)
    return result.body


class MetaReads:
    """Reads for one service process; caches each account's currency (it never changes)."""

    def __init__(self, graph: GraphClient, *, max_wait: float) -> None:
        self.graph = graph
        self.max_wait = max_wait
        self._currencies: dict[str, str] = {}

    async def read_object(
        self, object_id: str, account_id: str | None, level: str | None = None
    ) -> tuple[ObjectState, str]:
        """The object as Meta has it now, and its account currency (one batch when the account is known)."""
        fields = object_fields(level)
        if account_id and account_id not in self._currencies:
            results = await self.graph.batch(
                [BatchRequest.get(object_id, {"fields": fields}), BatchRequest.get(account_id, {"fields": "currency"})],
                max_wait=self.max_wait,
            )
            body = unwrap(results[0])
            self._currencies[account_id] = str(unwrap(results[1])["currency"])
        else:
            body = await call(self.graph.get(object_id, {"fields": fields}, max_wait=self.max_wait))
        obj = ObjectState.from_graph(body)
        return obj, await self.currency(obj.account_id or account_id or "")

    async def currency(self, account_id: str) -> str:
        if account_id not in self._currencies:
            body = await call(self.graph.get(account_id, {"fields": "currency"}, max_wait=self.max_wait))
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
