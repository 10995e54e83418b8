"""Lead forms from YAML, end to end: `create_lead_form` commands through real RabbitMQ and PostgreSQL to the Graph
sandbox over HTTP (which wants a Page token, as Meta does), then lead_fetcher's backfill on the new form.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from pydantic import SecretStr

from contracts.messages import CampaignCommandMessage
from services.campaign_executor import forms_cli
from services.campaign_executor.app import create_app
from services.campaign_executor.form_defs import parse
from services.campaign_executor.handlers import CONSUMER
from services.campaign_executor.settings import ExecutorSettings
from services.lead_fetcher.cli import backfill_once
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.messaging import declare_topology
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, MetaSettings, Settings
from tests.fixtures.infra import AMQP_URL
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.taps import tap
from tests.integration.test_campaign_executor import result_of, results, send  # noqa: F401 - fixture
from tests.integration.test_lead_fetcher_helpers import purge

pytestmark = pytest.mark.timeout(90)

FORM_YAML = (Path(__file__).parents[2] / "docs/examples/lead_form.yaml").read_text(encoding="utf-8")


@pytest.fixture
async def clean(db: asyncpg.Pool) -> AsyncIterator[None]:
    # The sandbox hands out the same ids after each reset: no form recorded here may outlive the test (the backfill
    # of other tests would scan it).
    async def forget() -> None:
        await db.execute("delete from lead_forms")
        await db.execute("delete from campaign_commands where kind = 'create_lead_form'")

    await forget()
    yield
    await forget()


def meta_settings(sandbox: SandboxHandle, *, page_token: str | None = None, pages: list[str] | None = None
                  ) -> MetaSettings:
    return MetaSettings(
        access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret), graph_url=sandbox.url,
        api_version=sandbox.version, request_timeout_seconds=10, ad_account_id=[sandbox.account_id],
        page_access_token=SecretStr(sandbox.page_token if page_token is None else page_token),
        page_ids=[sandbox.state["page_id"]] if pages is None else pages, health_check_seconds=0,
    )


@pytest.fixture
async def start(settings: Settings, sandbox: SandboxHandle, amqp: aio_pika.abc.AbstractChannel
                ) -> AsyncIterator[Callable[..., Any]]:
    started: list[Service] = []

    async def run(**meta: Any) -> Service:
        await declare_topology(AMQP_URL, [CONSUMER])
        await (await amqp.get_queue(CONSUMER.queue_name, ensure=False)).purge()
        service = create_app(settings.replace(meta_settings(sandbox, **meta), ExecutorSettings(),
                                              BudgetGuardrailSettings(_env_file=None)))
        await service.start()
        started.append(service)
        return service

    yield run
    for service in started:
        await service.stop()


def form_command(sandbox: SandboxHandle, text: str = FORM_YAML, *, page: str | None = None,
                 dry_run: bool = False, requested_by: str = "test") -> CampaignCommandMessage:
    _, spec = parse(text)
    return forms_cli.create_message(page or sandbox.state["page_id"], spec, requested_by=requested_by,
                                    dry_run=dry_run)


def form_posts(calls: dict[str, Any], page: str) -> list[dict[str, Any]]:
    return [c for c in calls["requests"] if c["method"] == "POST" and c["path"] == f"/{page}/leadgen_forms"]


async def test_a_form_is_created_once_and_the_backfill_scans_it(
    start, sandbox, broker, results, db, amqp, clean, settings  # noqa: F811
) -> None:
    everything = await tap(amqp, "#")  # every message on the exchange while the test runs
    await start()
    page = sandbox.state["page_id"]
    await sandbox.reset_calls()

    first = await result_of(results, await send(broker, form_command(sandbox)), timeout=30)

    assert first.status == "ok", first.detail
    form_id = first.created_ids["lead_form"]
    assert first.counts == {"questions": 5, "custom_questions": 2}
    assert len(form_posts(await sandbox.calls(), page)) == 1
    _, _, node = await sandbox.graph("GET", form_id, fields="name,status,questions,privacy_policy_url,"
                                                             "thank_you_page,context_card,locale")
    assert (node["name"], node["status"], node["locale"]) == ("Free case review - Houston", "ACTIVE", "en_US")
    assert [q["key"] for q in node["questions"]] == ["full_name", "email", "phone_number", "accident_date", "injured"]
    assert node["questions"][4]["options"] == [{"key": "yes", "value": "Yes"}, {"key": "no", "value": "No"}]
    assert node["privacy_policy_url"] == "https://example.com/privacy"
    assert (node["thank_you_page"]["button_type"], node["thank_you_page"]["website_url"]) == (
        "VIEW_WEBSITE", "https://example.com")
    assert node["context_card"]["style"] == "LIST_STYLE"
    row = await db.fetchrow("select * from lead_forms where form_id = $1", form_id)
    assert (row["page_id"], row["name"], row["adopted"]) == (page, "Free case review - Houston", False)

    # The same definition again (a new command: the operator ran `forms create` twice): nothing new at Meta.
    await sandbox.reset_calls()
    again = await result_of(results, await send(broker, form_command(sandbox)), timeout=30)
    assert again.status == "ok", again.detail
    assert again.created_ids == {}
    assert "nothing created" in again.detail
    assert form_id in again.detail
    assert form_posts(await sandbox.calls(), page) == []
    _, _, listed = await sandbox.graph("GET", f"{page}/leadgen_forms", token=sandbox.page_token, fields="name",
                                      limit=100)
    assert [f["name"] for f in listed["data"]].count("Free case review - Houston") == 1

    # lead_fetcher's backfill scans the new form: a lead whose webhook never came is captured from it.
    lead_ids = await sandbox.create_leads(form_id=form_id, count=1, deliver=False)
    _, _, lead = await sandbox.graph("GET", lead_ids[0], fields="field_data")
    await purge(db, lead_ids)
    report = await backfill_once(settings.replace(meta_settings(sandbox),
                                                  LeadFetcherSettings(backfill_interval_seconds=0)))
    assert form_id not in report.failed_forms
    stored = await db.fetchrow("select form_id, source from leads where leadgen_id = $1", lead_ids[0])
    assert (stored["form_id"], stored["source"]) == (form_id, "backfill")
    assert await db.fetchval("select count(*) from lead_form_watermarks where form_id = $1", form_id) == 1
    await purge(db, lead_ids)
    await db.execute("delete from lead_form_watermarks where form_id = $1", form_id)

    # No lead's personal data crossed the broker: the commands carry the form, the results ids and counts.
    bodies = json.dumps(await everything.bodies())
    personal = ("full_name", "email", "phone_number")  # the form's own choices (yes / no) travel with its definition
    values = [v for f in lead["field_data"] if f["name"] in personal for v in f["values"]]
    assert values
    assert not [v for v in values if v in bodies]
    assert str(first.command_id) in bodies


async def test_a_form_already_on_the_page_is_recorded_not_made_twice(
    start, sandbox, broker, results, db, clean  # noqa: F811
) -> None:
    # As after an attempt that died between Meta's answer and the record: the form exists at Meta, unrecorded.
    page = sandbox.state["page_id"]
    _, spec = parse(FORM_YAML)
    status, _, made = await sandbox.graph("POST", f"{page}/leadgen_forms", token=sandbox.page_token,
                                          **spec.graph_params())
    assert status == 200, made
    await start()
    await sandbox.reset_calls()

    result = await result_of(results, await send(broker, form_command(sandbox)), timeout=30)

    assert result.status == "ok", result.detail
    assert result.created_ids == {}
    assert result.after["form_id"] == made["id"]
    assert form_posts(await sandbox.calls(), page) == []
    assert await db.fetchval("select adopted from lead_forms where form_id = $1", made["id"]) is True


async def test_what_may_not_be_created_is_refused_with_the_reason(
    start, sandbox, broker, results, db, clean  # noqa: F811
) -> None:
    page = sandbox.state["page_id"]
    await start(page_token="")
    await sandbox.reset_calls()

    no_token = await result_of(results, await send(broker, form_command(sandbox)), timeout=30)
    unwatched = await result_of(results, await send(broker, form_command(sandbox, page="999000111222")),
                                timeout=30)
    dry = await result_of(results, await send(broker, form_command(sandbox, dry_run=True)), timeout=30)
    from_rule = await result_of(results, await send(broker, form_command(
        sandbox, requested_by="rules_engine:some_rule")), timeout=30)  # as a rule would send it

    assert (from_rule.status, from_rule.guardrail) == ("refused", "operator_only")
    assert (no_token.status, no_token.guardrail) == ("refused", "page_token_missing")
    assert "META_PAGE_ACCESS_TOKEN" in no_token.detail
    assert (unwatched.status, unwatched.guardrail) == ("refused", "page_not_watched")
    assert "META_PAGE_IDS" in unwatched.detail
    assert dry.status == "refused"  # a dry run is checked like the real thing
    assert form_posts(await sandbox.calls(), page) == []
    assert await db.fetchval("select count(*) from lead_forms") == 0


async def test_a_dry_run_creates_nothing(start, sandbox, broker, results, db, clean) -> None:  # noqa: F811
    await start()
    await sandbox.reset_calls()
    dry = await result_of(results, await send(broker, form_command(sandbox, dry_run=True)), timeout=30)
    assert dry.status == "dry_run", dry.detail
    assert "would create lead form 'Free case review - Houston'" in dry.detail
    assert form_posts(await sandbox.calls(), sandbox.state["page_id"]) == []
    assert await db.fetchval("select count(*) from lead_forms") == 0


@pytest.mark.parametrize(("text", "words"), [
    (FORM_YAML.replace("type: PHONE", "type: FAVOURITE_COLOUR"), "questions[2].type: 'FAVOURITE_COLOUR' is not one of"),
    (FORM_YAML.replace('url: "https://example.com/privacy", ', ""), "privacy_policy.url: Field required"),
    (FORM_YAML.replace("Free case review - Houston", "Free case\u202e review"), "U+202E RIGHT-TO-LEFT OVERRIDE"),
    (FORM_YAML + "#" + "x" * 70_000, "larger than 64 KiB"),
])
def test_an_invalid_definition_is_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    path = tmp_path / "form.yaml"
    path.write_text(text, encoding="utf-8")
    code = forms_cli._cmd_create(argparse.Namespace(file=str(path), page=None, dry_run=False, wait=0.0))
    assert code == 2
    assert words in capsys.readouterr().err


async def test_a_token_that_is_not_the_pages_fails_with_what_to_do(
    start, sandbox, broker, results, db, clean  # noqa: F811
) -> None:
    await start(page_token=sandbox.token)  # the system-user token where the Page token belongs: Meta says 190

    result = await result_of(results, await send(broker, form_command(sandbox)), timeout=30)

    assert result.status == "failed", result.detail
    assert result.meta_error.code == 190
    assert "not a Page access token" in result.detail
    assert await db.fetchval("select count(*) from lead_forms") == 0


async def test_the_backfill_scans_a_recorded_form_the_listing_misses_and_skips_one_gone(
    sandbox, db, settings, clean
) -> None:
    page = sandbox.state["page_id"]
    _, spec = parse(FORM_YAML)
    _, _, made = await sandbox.graph("POST", f"{page}/leadgen_forms", token=sandbox.page_token,
                                     **spec.graph_params())
    await db.execute("insert into lead_forms (page_id, name, form_id, digest, command_id) values "
                     "($1, 'made', $2, 'x', gen_random_uuid()), ($1, 'gone', '999000999000999', 'x', "
                     "gen_random_uuid())", page, made["id"])
    lead_ids = await sandbox.create_leads(form_id=made["id"], count=1, deliver=False)
    await purge(db, lead_ids)
    # The Page's listing fails: only leadwire's record knows the new form.
    await sandbox.faults(error_rate=1.0, error_status=400, path_regex=f"^/{page}/leadgen_forms$",
                         error={"message": "(#100) Invalid parameter", "code": 100, "is_transient": False})

    report = await backfill_once(settings.replace(meta_settings(sandbox),
                                                  LeadFetcherSettings(backfill_interval_seconds=0)))

    assert report.failed_pages == [page], "the listing failed and says so"
    assert report.failed_forms == [], "the form deleted at Meta is skipped, not a failure"
    assert report.forms_scanned == 1
    assert await db.fetchval("select form_id from leads where leadgen_id = $1", lead_ids[0]) == made["id"]
    await purge(db, lead_ids)
    await db.execute("delete from lead_form_watermarks where form_id = $1", made["id"])


async def test_the_command_line_creates_then_lists_the_form(
    start, sandbox, settings, db, clean, tmp_path, capsys
) -> None:
    await start()
    path = tmp_path / "form.yaml"
    path.write_text(FORM_YAML, encoding="utf-8")
    cli_settings = settings.replace(meta_settings(sandbox))

    assert await forms_cli.create(cli_settings, str(path), wait=30) == 0
    created = capsys.readouterr().out
    assert "Free case review - Houston\tok\tlead form 'Free case review - Houston' (" in created

    assert await forms_cli.list_forms(cli_settings, [sandbox.state["page_id"]]) == 0
    listed = capsys.readouterr().out.splitlines()
    form_id = await db.fetchval("select form_id from lead_forms")
    assert f"{sandbox.state['page_id']}\t{form_id}\tFree case review - Houston\tcreated" in listed[0]
    assert sum("not made by leadwire" in line for line in listed) == len(sandbox.state["form_ids"])


async def test_forms_list_reads_each_pages_own_token_when_none_is_set(
    sandbox: SandboxHandle, settings: Settings, db: asyncpg.Pool, clean: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without META_PAGE_ACCESS_TOKEN, `leadwire forms list` reads the Page's token with META_ACCESS_TOKEN (`GET
    /{page}?fields=access_token`), as the backfill does, and lists with it: Meta takes no other token for it."""
    page = sandbox.state["page_id"]
    cli_settings = settings.replace(meta_settings(sandbox, page_token=""))

    assert await forms_cli.list_forms(cli_settings, [page]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert sum("not made by leadwire" in line for line in listed) == len(sandbox.state["form_ids"])
    requests = (await sandbox.calls())["requests"]
    assert [r["status"] for r in requests if r["path"] == f"/{page}"] == [200]

    await sandbox.set_token(revoke=["pages_read_engagement"])  # the system user can no longer read the Page's token
    assert await forms_cli.list_forms(cli_settings, [page]) == 1
    out, err = capsys.readouterr()
    assert "not made by leadwire" not in out
    assert f"Page {page}: forms not listed" in err
    assert "META_PAGE_ACCESS_TOKEN" in err
    assert sandbox.token not in err
    assert sandbox.page_token not in err
