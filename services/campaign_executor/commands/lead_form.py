"""create_lead_form: a lead form on a Page from its definition, once (docs: README "Lead forms").

Idempotent by (Page, name): a form recorded under the name is never created again; before creating, the Page's
forms are read and one of the same name (an earlier attempt that died between Meta's answer and the record, or a
form made in Ads Manager) is recorded instead. Meta's names are not unique, so this check is what keeps a
repeated command from making a second form. Meta's forms cannot be edited: a definition that changed since the
form was made is reported, not applied.

Meta wants a Page access token (META_PAGE_ACCESS_TOKEN) to create a form, and the Page must be one leadwire
watches (META_PAGE_IDS): its leads then arrive by webhook, and the recorded form is scanned by lead_fetcher's
backfill (view `created_lead_forms`) from its creation.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.commands import CreateLeadFormCommand
from services.campaign_executor import store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandFailed, CommandOutcome, Refusal, refused
from services.campaign_executor.meta_reads import call
from shared.graph.errors import AuthError, GraphError, ThrottledError, TransientError

GONE = frozenset({"ARCHIVED", "DELETED"})
RULES = "rules_engine"  # requested_by of every command a rule sends


def check(ctx: CommandContext, command: CreateLeadFormCommand) -> Refusal | None:
    """Why the executor may not create this form, or None."""
    if command.page_id not in ctx.page_ids:
        watched = ", ".join(ctx.page_ids) or "none"
        return Refusal("page_not_watched", f"Page {command.page_id} is not in META_PAGE_IDS (watched: {watched}): "
                                           "its leads would not be captured. Add it, run `leadwire pages "
                                           "subscribe`, and create the form again")
    if not ctx.page_token:
        return Refusal("page_token_missing", "Meta creates lead forms only with a Page access token: set "
                                             "META_PAGE_ACCESS_TOKEN (a long-lived token of the Page)")
    return None


async def apply_lead_form(
    ctx: CommandContext, conn: asyncpg.Connection, command: CreateLeadFormCommand
) -> CommandOutcome:
    spec, page = command.form, command.page_id
    if command.requested_by.startswith(RULES):
        return refused(Refusal("operator_only", "lead forms are created on an operator's command (`leadwire forms "
                                                "create`), never by a rule"))
    record = await store.recorded_lead_form(conn, page, spec.name)
    if record is not None:
        drift = ("" if record["digest"] == spec.digest else
                 "; this definition differs from the one it was made from, and Meta's forms cannot be edited: "
                 "give the new version another name")
        return CommandOutcome("ok", f"lead form {spec.name!r} exists on Page {page} ({record['form_id']}): "
                                    f"nothing created{drift}",
                              after={"form_id": record["form_id"], "name": spec.name, "page_id": page})
    refusal = check(ctx, command)
    if refusal is not None:
        return refused(refusal)
    custom = sum(q.type == "CUSTOM" for q in spec.questions)
    counts = {"questions": len(spec.questions), "custom_questions": custom}
    if command.dry_run:
        return CommandOutcome("dry_run", f"would create lead form {spec.name!r} on Page {page} with "
                                         f"{len(spec.questions)} questions ({custom} custom)", counts=counts,
                              after={"name": spec.name, "page_id": page})
    await store.mark_applying(conn, command.command_id, {"page_id": page, "name": spec.name, "digest": spec.digest})
    form_id = await _find(ctx, page, spec.name)
    adopted = form_id is not None
    if form_id is None:
        try:
            created = await call(ctx.graph.post(f"{page}/leadgen_forms", spec.graph_params(), token=ctx.page_token,
                                                max_wait=ctx.max_wait))
        except AuthError as exc:
            raise _token_failure(exc, page) from None
        form_id = str(created["id"])
    await store.record_lead_form(conn, page_id=page, name=spec.name, form_id=form_id, digest=spec.digest,
                                 adopted=adopted, command_id=command.command_id)
    what = "found on the Page by name and recorded (not created again)" if adopted else "created"
    return CommandOutcome(
        "ok", f"lead form {spec.name!r} ({form_id}) {what} on Page {page}, {len(spec.questions)} questions "
              f"({custom} custom); lead_fetcher's backfill scans it",
        counts=counts, created_ids={} if adopted else {"lead_form": form_id},
        after={"form_id": form_id, "name": spec.name, "page_id": page})


async def _find(ctx: CommandContext, page: str, name: str) -> str | None:
    """The id of a live form named `name` on the Page (the oldest, if Meta holds several), or None."""
    found: list[dict[str, Any]] = []
    try:
        async for item in ctx.graph.paginate(f"{page}/leadgen_forms", {"fields": "id,name,status", "limit": 100},
                                             token=ctx.page_token, max_wait=ctx.max_wait):
            if item.get("name") == name and item.get("status") not in GONE:
                found.append(item)
    except AuthError as exc:
        raise _token_failure(exc, page) from None
    except (ThrottledError, TransientError):
        raise
    except GraphError as exc:
        raise CommandFailed(exc) from None
    return str(min(found, key=lambda f: int(f["id"]))["id"]) if found else None


def _token_failure(exc: AuthError, page: str) -> Exception:
    """Meta's 190 for a token that is not the Page's: the command fails with what to do. Any other refused token is
    a broken token: the message is parked until it is fixed, as for every command."""
    if "Page Access Token" not in exc.message:
        return exc
    return CommandFailed(exc, f"Meta refused META_PAGE_ACCESS_TOKEN: it is not a Page access token of Page {page} "
                              f"(read one with `GET /{page}?fields=access_token`)")
