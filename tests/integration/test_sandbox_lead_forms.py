"""The sandbox's `POST|GET /{page-id}/leadgen_forms`: as strict as Meta (services/graph_sandbox/forms.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fixtures.sandbox import SandboxHandle

QUESTIONS = [
    {"type": "FULL_NAME"},
    {"type": "EMAIL"},
    {"type": "PHONE"},
    {"type": "CUSTOM", "key": "accident_date", "label": "When did the accident happen?"},
    {"type": "CUSTOM", "key": "injured", "label": "Were you injured?",
     "options": [{"key": "yes", "value": "Yes"}, {"key": "no", "value": "No"}]},
]
POLICY = {"url": "https://example.com/privacy", "link_text": "Privacy policy"}
THANKS = {"title": "Thank you", "body": "We call you within the hour.", "button_type": "VIEW_WEBSITE",
          "button_text": "Visit us", "website_url": "https://example.com"}


def form(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": "Free case review", "questions": json.dumps(QUESTIONS),
                              "privacy_policy": json.dumps(POLICY), "thank_you_page": json.dumps(THANKS),
                              "context_card": json.dumps({"title": "Free case review", "style": "LIST_STYLE",
                                                          "content": ["No fee unless we win"],
                                                          "button_text": "Start"})}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


async def create(sandbox: SandboxHandle, token: str | None = None, **overrides: Any) -> tuple[int, Any]:
    status, _, body = await sandbox.graph("POST", f"{sandbox.state['page_id']}/leadgen_forms",
                                          token=token or sandbox.page_token, **form(**overrides))
    return status, body


async def test_a_form_is_created_with_a_page_token_and_listed(sandbox: SandboxHandle) -> None:
    page = sandbox.state["page_id"]
    _, _, node = await sandbox.graph("GET", page, fields="access_token")
    assert node["access_token"] == sandbox.page_token, "the Page token is read as at Meta"
    status, body = await create(sandbox)
    assert status == 200, body
    form_id = body["id"]
    _, _, listed = await sandbox.graph(
        "GET", f"{page}/leadgen_forms", token=sandbox.page_token,
        fields="id,name,status,questions,privacy_policy_url,thank_you_page,context_card,locale")
    mine = next(f for f in listed["data"] if f["id"] == form_id)
    assert (mine["name"], mine["status"], mine["locale"]) == ("Free case review", "ACTIVE", "en_US")
    assert [q["key"] for q in mine["questions"]] == ["full_name", "email", "phone_number", "accident_date",
                                                       "injured"]
    assert mine["questions"][4]["options"] == [{"key": "yes", "value": "Yes"}, {"key": "no", "value": "No"}]
    assert mine["privacy_policy_url"] == "https://example.com/privacy"
    assert mine["thank_you_page"]["button_type"] == "VIEW_WEBSITE"
    assert mine["context_card"]["content"] == ["No fee unless we win"]


async def test_only_a_page_token_may_create_a_form(sandbox: SandboxHandle) -> None:
    status, body = await create(sandbox, token=sandbox.token)
    assert status == 400
    assert (body["error"]["code"], body["error"]["message"]) == (
        190, "(#190) This method must be called with a Page Access Token")


async def test_only_a_page_token_may_list_forms_but_leads_take_a_user_token_too(sandbox: SandboxHandle) -> None:
    page, form_id = sandbox.state["page_id"], sandbox.state["form_ids"][0]
    for token in (sandbox.token, "EAAPage999SandboxToken"):  # a system-user token; another Page's token
        status, _, body = await sandbox.graph("GET", f"{page}/leadgen_forms", token=token)
        assert status == 400
        assert (body["error"]["code"], body["error"]["message"]) == (
            190, "(#190) This method must be called with a Page Access Token")
    status, _, listed = await sandbox.graph("GET", f"{page}/leadgen_forms", token=sandbox.page_token)
    assert status == 200
    assert form_id in [f["id"] for f in listed["data"]]
    for token in (sandbox.token, sandbox.page_token):  # Meta: a Page or a user token reads leads
        status, _, leads = await sandbox.graph("GET", f"{form_id}/leads", token=token, limit=1)
        assert status == 200, leads
        status, _, lead = await sandbox.graph("GET", leads["data"][0]["id"], token=token)
        assert status == 200, lead


async def test_names_are_not_unique_at_meta(sandbox: SandboxHandle) -> None:
    first = await create(sandbox)
    second = await create(sandbox)
    assert first[0] == second[0] == 200
    assert first[1]["id"] != second[1]["id"], "a second form with the same name is another form"


@pytest.mark.parametrize(("overrides", "blame", "words"), [
    ({"name": None}, "name", "name is required"),
    ({"questions": None}, "questions", "questions is required"),
    ({"questions": "[]"}, "questions", "at least one question"),
    ({"questions": json.dumps([{"type": "FAVOURITE_COLOUR"}])}, "questions", "must be one of"),
    ({"questions": json.dumps([{"type": "CUSTOM", "key": "why"}])}, "questions[0][label]", "is required"),
    ({"questions": json.dumps([{"type": "CUSTOM", "label": "A"}, {"type": "CUSTOM", "label": "a"}])},
     "questions", "used by another question"),
    ({"questions": json.dumps([{"type": "EMAIL"}, {"type": "EMAIL"}])}, "questions", "used by another question"),
    ({"questions": json.dumps([{"type": "CUSTOM", "label": "Pick", "options": [{"key": "a"}]}])},
     "questions[0][options][0][value]", "is required"),
    ({"questions": json.dumps([{"type": "EMAIL", "options": [{"value": "x"}]}])}, "questions", "only valid on custom"),
    ({"privacy_policy": None}, "privacy_policy", "privacy_policy is required"),
    ({"privacy_policy": json.dumps({"link_text": "Privacy"})}, "privacy_policy[url]", "is required"),
    ({"privacy_policy": json.dumps({**POLICY, "url": "javascript:alert(1)"})}, "privacy_policy", "valid URL"),
    ({"privacy_policy": json.dumps({**POLICY, "link_text": "x" * 71})}, "privacy_policy", "at most 70"),
    ({"thank_you_page": None}, "thank_you_page", "thank_you_page or a follow_up_action_url"),
    ({"thank_you_page": json.dumps({**THANKS, "button_type": "DANCE"})}, "thank_you_page", "must be one of"),
    ({"thank_you_page": json.dumps({k: v for k, v in THANKS.items() if k != "website_url"})},
     "thank_you_page[website_url]", "is required"),
    ({"context_card": json.dumps({"style": "COMIC_STYLE"})}, "context_card", "must be one of"),
    ({"locale": "XX_YY"}, "locale", "must be one of"),
    ({"colour": "red"}, "colour", "not a valid parameter"),
])
async def test_invalid_forms_are_refused_like_meta(
    sandbox: SandboxHandle, overrides: dict[str, Any], blame: str, words: str
) -> None:
    before = len((await sandbox.graph("GET", f"{sandbox.state['page_id']}/leadgen_forms", limit=100,
                                     token=sandbox.page_token))[2]["data"])
    status, body = await create(sandbox, **overrides)
    assert status == 400, body
    error = body["error"]
    assert error["code"] == 100
    assert words in error["message"], error["message"]
    assert error["error_data"]["blame_field_specs"] == [[blame]]
    after = len((await sandbox.graph("GET", f"{sandbox.state['page_id']}/leadgen_forms", limit=100,
                                     token=sandbox.page_token))[2]["data"])
    assert after == before, "nothing created"


async def test_a_follow_up_url_stands_in_for_the_thank_you_page(sandbox: SandboxHandle) -> None:
    status, body = await create(sandbox, thank_you_page=None, follow_up_action_url="https://example.com/next")
    assert status == 200, body
    _, _, node = await sandbox.graph("GET", body["id"], fields="follow_up_action_url,questions")
    assert node["follow_up_action_url"] == "https://example.com/next"


async def test_leads_answer_the_questions_of_their_own_form(sandbox: SandboxHandle) -> None:
    questions = [{"type": "FIRST_NAME"}, {"type": "EMAIL"}, {"type": "ZIP"},
                 {"type": "CUSTOM", "label": "Best time to call"},
                 {"type": "CUSTOM", "key": "budget", "label": "Your budget?",
                  "options": [{"key": "under_5k", "value": "Under $5,000"}, {"key": "over_5k", "value": "$5,000+"}]}]
    status, made = await create(sandbox, questions=json.dumps(questions))
    assert status == 200, made
    lead_ids = await sandbox.create_leads(form_id=made["id"], count=6, deliver=False)
    seeded = await sandbox.create_leads(count=1, deliver=False)  # a seeded form still asks its six questions
    for lead_id in lead_ids:
        _, _, lead = await sandbox.graph("GET", lead_id, fields="field_data,form_id")
        assert lead["form_id"] == made["id"]
        answers = {item["name"]: item["values"] for item in lead["field_data"]}
        assert list(answers) == ["first_name", "email", "zip_code", "best_time_to_call", "budget"]
        assert "@" in answers["email"][0]
        assert answers["budget"][0] in ("under_5k", "over_5k"), "a choice is answered with the option's key"
    _, _, lead = await sandbox.graph("GET", seeded[0], fields="field_data")
    assert [item["name"] for item in lead["field_data"]] == [
        "full_name", "email", "phone_number", "city", "zip_code", "when_would_you_like_to_start?"]
