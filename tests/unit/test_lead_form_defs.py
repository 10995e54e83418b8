"""Lead form definitions (YAML → contracts.lead_forms.LeadFormSpec): what is accepted, what Meta receives, and the
messages bad input gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contracts.commands import CampaignCommand
from services.campaign_executor.form_defs import FormDefinitionError, load, parse

GOOD = """
page_id: "102030405060708"
name: Free case review
questions:
  - type: FULL_NAME
  - type: EMAIL
  - {type: CUSTOM, key: accident_date, label: "When did the accident happen?", inline_context: Roughly is fine}
  - type: CUSTOM
    key: injured
    label: Were you injured?
    options: [{key: "yes", value: "Yes"}, {value: "No"}]
privacy_policy: {url: "https://example.com/privacy"}
thank_you_page:
  title: Thank you
  body: |
    We call you within the hour.
    Keep your phone close.
  button_type: CALL_BUSINESS
  business_phone_number: "+1 713 555 0100"
context_card: {title: "Injured? 🚗", content: ["No fee unless we win"]}
"""


def bad(text: str) -> str:
    with pytest.raises(FormDefinitionError) as caught:
        parse(text)
    return str(caught.value)


def test_a_definition_becomes_metas_params() -> None:
    page, spec = parse(GOOD)
    assert page == "102030405060708"
    params = spec.graph_params()
    assert params["name"] == "Free case review"
    assert params["locale"] == "EN_US"
    assert json.loads(params["questions"]) == [
        {"type": "FULL_NAME"}, {"type": "EMAIL"},
        {"type": "CUSTOM", "key": "accident_date", "label": "When did the accident happen?",
         "inline_context": "Roughly is fine"},
        {"type": "CUSTOM", "key": "injured", "label": "Were you injured?",
         "options": [{"key": "yes", "value": "Yes"}, {"key": "No", "value": "No"}]},
    ]
    assert json.loads(params["privacy_policy"]) == {"url": "https://example.com/privacy",
                                                    "link_text": "Privacy policy"}
    thanks = json.loads(params["thank_you_page"])
    assert thanks["body"] == "We call you within the hour.\nKeep your phone close."
    assert thanks["button_type"] == "CALL_BUSINESS"
    assert json.loads(params["context_card"])["title"] == "Injured? 🚗"
    assert "follow_up_action_url" not in params


def test_the_command_carries_the_definition_and_its_digest_is_stable() -> None:
    _, spec = parse(GOOD)
    command = CampaignCommand.model_validate({"kind": "create_lead_form", "command_id": "5d0c3c7e-4f55-4b8e-9a53-"
                                              "0c0d2f6b8f11", "requested_by": "cli", "page_id": "102030405060708",
                                              "form": spec.model_dump(mode="json")})
    assert command.root.form == spec  # type: ignore[union-attr]
    assert parse(GOOD)[1].digest == spec.digest
    assert parse(GOOD.replace("Were you injured?", "Were you hurt?"))[1].digest != spec.digest


@pytest.mark.parametrize(("change", "words"), [
    (("type: EMAIL", "type: FAVOURITE_COLOUR"), "questions[1].type: 'FAVOURITE_COLOUR' is not one of"),
    (('{url: "https://example.com/privacy"}', "{link_text: Privacy}"), "privacy_policy.url: Field required"),
    (('{url: "https://example.com/privacy"}', '{url: "javascript:alert(1)"}'), "http:// or https://"),
    (('{url: "https://example.com/privacy"}', '{url: "https://e.com/p", link_text: "' + "x" * 71 + '"}'),
     "at most 70 characters"),
    (("key: accident_date, ", ""), "questions[2]: a CUSTOM question needs a key"),
    (("key: injured", "key: accident_date"), "questions asked twice (same key or type): accident_date"),
    (("key: injured", "key: Injured Party"), "questions[3].key"),
    (("  - type: EMAIL\n", "  - type: EMAIL\n  - type: EMAIL\n"), "questions asked twice (same key or type): EMAIL"),
    (("  - type: EMAIL\n", "  - {type: EMAIL, options: [{value: a}, {value: b}]}\n"), "options are for CUSTOM"),
    (('options: [{key: "yes", value: "Yes"}, {value: "No"}]', 'options: [{value: "Yes"}]'), "at least 2 items"),
    (("name: Free case review", "name: Free case\u202e review"), "U+202E RIGHT-TO-LEFT OVERRIDE"),
    (("name: Free case review", "name: Free\u200bcase review"), "U+200B ZERO WIDTH SPACE"),
    (("name: Free case review", 'name: "Free\\ecase review"'), "U+001B"),
    (("name: Free case review", 'name: "   "'), "name: must not be empty"),
    (("button_type: CALL_BUSINESS\n  business_phone_number", "button_type: VIEW_WEBSITE\n  business_phone_number"),
     "a VIEW_WEBSITE button needs website_url"),
    (("context_card: {", "colour: red\ncontext_card: {"), "colour: unknown field"),
    (('page_id: "102030405060708"', "page_id: my-page"), "page_id: a Page id is digits"),
])
def test_bad_definitions_are_refused_with_the_field_and_why(change: tuple[str, str], words: str) -> None:
    old, new = change
    assert old in GOOD
    assert words in bad(GOOD.replace(old, new))


def test_a_form_needs_somewhere_to_go_after_submitting() -> None:
    text = GOOD[:GOOD.index("thank_you_page:")] + 'context_card: {title: "Hi"}\n'
    assert "a form needs a thank_you_page (or a follow_up_action_url)" in bad(text)
    _, spec = parse(text + 'follow_up_action_url: "https://example.com/next"\n')
    assert spec.graph_params()["follow_up_action_url"] == "https://example.com/next"


def test_text_is_normalized_and_every_problem_is_listed() -> None:
    _, spec = parse(GOOD.replace("name: Free case review", "name: Cafe\u0301 review"))
    assert spec.name == "Café review"  # NFC: one code point
    message = bad("name: X\nquestions: [{type: NOPE}, {type: CUSTOM, label: Why}]\nprivacy_policy: {}\n")
    assert message.count("\n") >= 2, "one line per problem"
    assert "questions[0].type" in message
    assert "questions[1]" in message
    assert "privacy_policy.url" in message


def test_oversized_odd_and_missing_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(GOOD + "#" + "x" * 70_000, encoding="utf-8")
    with pytest.raises(FormDefinitionError, match="larger than 64 KiB"):
        load(big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: Caf\xe9\n".encode("latin-1"))
    with pytest.raises(FormDefinitionError, match="not UTF-8"):
        load(latin)
    with pytest.raises(FormDefinitionError, match="no such file"):
        load(tmp_path / "missing.yaml")
    with pytest.raises(FormDefinitionError, match="not valid YAML"):
        parse("name: [unclosed")
    with pytest.raises(FormDefinitionError, match="expected a mapping"):
        parse("- just a list")
    many = "\n".join(f"  - {{type: CUSTOM, key: q{i}, label: Q{i}}}" for i in range(31))
    assert "questions: List should have at most 30 items" in bad(
        GOOD.replace("  - type: FULL_NAME\n", many + "\n"))


def test_what_leadwire_offers_is_what_meta_takes() -> None:
    from typing import get_args

    from contracts.lead_forms import ButtonType, Locale, QuestionType
    from services.graph_sandbox import forms, schema

    def values(literal: object) -> set[str]:
        out: set[str] = set()
        for arg in get_args(literal):
            out |= values(arg) if get_args(arg) else {arg}
        return out

    assert values(QuestionType) <= forms.QUESTION_TYPES
    assert values(ButtonType) <= forms.THANK_YOU_BUTTONS
    endpoint = schema.node_type("Page").endpoint("POST", "leadgen_forms")
    assert endpoint is not None
    assert values(Locale) == set(endpoint.enums["locale_enum"]), "Meta's locales, from its SDK"
