"""`leadwire forms list [--page ID]` and `leadwire forms create FILE [--page ID] [--dry-run] [--wait S]`.

`create` checks the YAML definition here (every problem listed, exit 2, nothing sent), then enqueues one
`create_lead_form` command and relays it to the broker: the running campaign executor creates the form once,
with the same audit and results as every other command. Running the command is the operator's consent.
`list` shows the forms leadwire recorded and, for each watched Page, the forms Meta lists (read with the Page
token: META_PAGE_ACCESS_TOKEN, else the Page's own read with META_ACCESS_TOKEN, as the backfill does).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

from contracts.commands import CampaignCommand, CreateLeadFormCommand
from contracts.messages import CampaignCommandMessage
from services.campaign_executor import store
from services.campaign_executor.cli import send_commands
from services.campaign_executor.form_defs import FormDefinitionError, load
from shared.cli import graph_client
from shared.db.pool import create_pool
from shared.graph import GraphError
from shared.page_tokens import configured_forms_token, page_access_token
from shared.settings import Settings


def register(subparsers: Any) -> None:
    forms = subparsers.add_parser("forms", help="lead forms (Instant Forms) on the watched Pages").add_subparsers(
        dest="forms_command", required=True)
    listing = forms.add_parser("list", help="the forms leadwire created, and each watched Page's forms at Meta")
    listing.add_argument("--page", action="append", default=None, help="a Page id (default: META_PAGE_IDS)")
    listing.set_defaults(func=_cmd_list)
    create = forms.add_parser("create", help="create a lead form from a YAML definition (once per Page and name)")
    create.add_argument("file", help="the form's YAML definition")
    create.add_argument("--page", default=None, help="the Page (default: the file's page_id, else the first of "
                                                      "META_PAGE_IDS)")
    create.add_argument("--dry-run", action="store_true", help="check and report, create nothing")
    create.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the executor's result and print it")
    create.set_defaults(func=_cmd_create)


def create_message(page_id: str, form: Any, *, requested_by: str, dry_run: bool = False) -> CampaignCommandMessage:
    return CampaignCommandMessage.new(CampaignCommand(CreateLeadFormCommand(
        command_id=uuid.uuid4(), page_id=page_id, form=form, requested_by=requested_by, dry_run=dry_run,
        reason=f"operator asked for lead form {form.name!r}")))


def _cmd_create(args: argparse.Namespace) -> int:
    try:
        load(args.file)  # checked before any setting is read: a wrong file is the first thing to hear about
    except FormDefinitionError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    return asyncio.run(create(Settings(), args.file, page=args.page, dry_run=args.dry_run, wait=args.wait))


async def create(settings: Settings, file: str, *, page: str | None = None, dry_run: bool = False,
                 wait: float = 0.0) -> int:
    """`leadwire forms create`: 2 for a wrong definition or no Page, else as `send_commands`."""
    try:
        file_page, form = load(file)
    except FormDefinitionError as exc:
        sys.stderr.write(f"leadwire: {exc}\n")
        return 2
    target = page or file_page or (settings.meta.page_ids[0] if settings.meta.page_ids else None)
    if not target or not str(target).isdigit():
        sys.stderr.write("leadwire: no Page for the form: give page_id in the file, --page, or set META_PAGE_IDS\n")
        return 2
    message = create_message(str(target), form, requested_by="cli:forms create", dry_run=dry_run)
    return await send_commands(settings, [message], {str(message.payload.root.command_id): form.name}, wait=wait)


def _cmd_list(args: argparse.Namespace) -> int:
    settings = Settings()
    return asyncio.run(list_forms(settings, args.page or list(settings.meta.page_ids)))


async def list_forms(settings: Settings, pages: list[str]) -> int:
    """`leadwire forms list`: the forms leadwire recorded, then each Page's other forms at Meta."""
    pool = await create_pool(settings.database)
    try:
        recorded = await store.recorded_lead_forms(pool)
    finally:
        await pool.close()
    for row in recorded:
        sys.stdout.write(f"{row['page_id']}\t{row['form_id']}\t{row['name']}\t"
                         f"{'found at Meta' if row['adopted'] else 'created'} {row['created_at']:%Y-%m-%d %H:%M}\n")
    return await _meta_forms(settings, pages, {r["form_id"] for r in recorded})


async def _meta_forms(settings: Settings, pages: list[str], mine: set[str]) -> int:
    meta = settings.meta
    failed = 0
    async with graph_client(settings, max_wait=300.0) as graph:
        for page in pages:
            # Meta lists a Page's lead forms only with that Page's own token (docs/meta-api.md §7.5): the one set,
            # else the Page's read with META_ACCESS_TOKEN, as the backfill does.
            token = configured_forms_token(meta) or await page_access_token(graph, page, meta.access_token)
            if token is None:
                sys.stderr.write(f"leadwire: Page {page}: forms not listed: Meta lists a Page's lead forms only with "
                                 f"the Page's own token, and META_ACCESS_TOKEN cannot read it (`GET /{page}?fields="
                                 "access_token`); set META_PAGE_ACCESS_TOKEN or give the token pages_show_list and "
                                 "pages_read_engagement on the Page\n")
                failed += 1
                continue
            try:
                async for item in graph.paginate(f"{page}/leadgen_forms", {"fields": "id,name,status", "limit": 100},
                                                 token=token):
                    if str(item.get("id")) not in mine:
                        sys.stdout.write(f"{page}\t{item.get('id')}\t{item.get('name')}\t"
                                         f"at Meta ({item.get('status')}), not made by leadwire\n")
            except GraphError as exc:
                sys.stderr.write(f"leadwire: Page {page}: forms not listed: {exc}\n")
                failed += 1
    return 1 if failed else 0
