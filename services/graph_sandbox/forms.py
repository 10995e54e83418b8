"""Lead form creation: `POST /{page-id}/leadgen_forms` (BUC `pages`), as strict as Meta.

What Meta documents (Graph API reference, Page → leadgen_forms; SDK `Page.create_lead_gen_form`):
* a **Page access token** of that Page is required: any other token gets `(#190) This method must be called with a
  Page Access Token` (OAuthException, code 190). The Page's token is `GET /{page-id}?fields=access_token`;
* `name` and `questions` are required; `privacy_policy` carries `url` and `link_text` (at most 70 characters;
  a bad URL or a longer text is refused);
* each question has a `type` from Meta's list; custom questions (`CUSTOM`) carry a `label`, and a `key` (derived
  from the label when absent) that names the answer in the lead's `field_data`; `options` (each with a `value`,
  optionally a `key`) make a custom question multiple choice;
* `thank_you_page` (`title`, `body`, `button_type`, `website_url` for website buttons, `business_phone_number`
  for calls) or `follow_up_action_url`: where the person goes after submitting;
* `context_card` (`title`, `style` LIST_STYLE|PARAGRAPH_STYLE, `content`, `button_text`): the intro screen.

Names are not unique at Meta: a second form with a name already used is another form (the caller keeps track).
Forms cannot be edited once created. Params the SDK does not declare, and values of the wrong type, are refused
before this handler runs (`schema.check_params`). Where Meta's exact error text is not documented the message is
ours, with Meta's code 100 and the param in `error_data.blame_field_specs`.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from . import schema
from .core import GraphRequest, Sandbox
from .errors import GraphError, invalid_param, missing_param
from .state import Node, page_token

# Meta's `questions[].type` values (Graph API reference, Page leadgen_forms).
QUESTION_TYPES = frozenset({
    "CUSTOM", "CITY", "COMPANY_NAME", "COUNTRY", "DOB", "EMAIL", "GENDER", "FIRST_NAME", "FULL_NAME", "JOB_TITLE",
    "LAST_NAME", "MARITIAL_STATUS", "PHONE", "PHONE_OTP", "POST_CODE", "PROVINCE", "RELATIONSHIP_STATUS", "STATE",
    "STREET_ADDRESS", "ZIP", "WORK_EMAIL", "MILITARY_STATUS", "WORK_PHONE_NUMBER", "SLIDER", "STORE_LOOKUP",
    "STORE_LOOKUP_WITH_TYPEAHEAD", "DATE_TIME", "ID_CPF", "ID_AR_DNI", "ID_CL_RUT", "ID_CO_CC", "ID_EC_CI",
    "ID_PE_DNI", "ID_MX_RFC", "ID_MX_CURP", "JOIN_CODE", "USER_PROVIDED_PHONE_NUMBER",
})
# The key a standard question's answer carries in `field_data` (what lead reads show).
STANDARD_KEYS = {
    "FULL_NAME": "full_name", "FIRST_NAME": "first_name", "LAST_NAME": "last_name", "EMAIL": "email",
    "PHONE": "phone_number", "CITY": "city", "STATE": "state", "PROVINCE": "province", "ZIP": "zip_code",
    "POST_CODE": "post_code", "COUNTRY": "country", "STREET_ADDRESS": "street_address", "DOB": "date_of_birth",
    "GENDER": "gender", "JOB_TITLE": "job_title", "COMPANY_NAME": "company_name", "WORK_EMAIL": "work_email",
    "WORK_PHONE_NUMBER": "work_phone_number", "MARITIAL_STATUS": "marital_status",
    "RELATIONSHIP_STATUS": "relationship_status", "MILITARY_STATUS": "military_status",
}
THANK_YOU_BUTTONS = frozenset({
    "VIEW_WEBSITE", "CALL_BUSINESS", "MESSAGE_BUSINESS", "DOWNLOAD", "SCHEDULE_APPOINTMENT", "VIEW_ON_FACEBOOK",
    "PROMO_CODE", "NONE", "WHATSAPP", "P2B_MESSENGER", "BOOK_ON_WEBSITE", "CANCEL",
})
WEBSITE_BUTTONS = frozenset({"VIEW_WEBSITE", "DOWNLOAD", "BOOK_ON_WEBSITE"})
CONTEXT_STYLES = frozenset({"LIST_STYLE", "PARAGRAPH_STYLE"})
MAX_LINK_TEXT = 70  # documented: privacy_policy.link_text


def not_page_token() -> GraphError:
    return GraphError("(#190) This method must be called with a Page Access Token", code=190)


def _json(value: Any, name: str, kind: type) -> Any:
    """A param that is a JSON object (`dict`) or array (`list`), given as such or as JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, kind):
        raise invalid_param(f"Param {name} must be {'a JSON object' if kind is dict else 'an array'}", blame=[name])
    return value


def _object(value: Any, name: str) -> dict[str, Any]:
    result: dict[str, Any] = _json(value, name, dict)
    return result


def _list(value: Any, name: str) -> list[Any]:
    result: list[Any] = _json(value, name, list)
    return result


def _text(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise missing_param(f"{where}[{key}]")
        return None
    if not isinstance(value, str):
        raise invalid_param(f"Param {where}[{key}] must be a string", blame=[where])
    return value


def _url(value: str, name: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value.strip()):
        raise invalid_param(f"Param {name} must be a valid URL", blame=[name.split("[")[0]])
    return value.strip()


def derived_key(label: str) -> str:
    """The key Meta gives a custom question without one: its label, lower case, spaces as underscores."""
    return re.sub(r"\s+", "_", label.strip().lower())


def _questions(raw: Any) -> list[dict[str, Any]]:
    items = _list(raw, "questions")
    if not items:
        raise invalid_param("Param questions must contain at least one question", blame=["questions"])
    out: list[dict[str, Any]] = []
    keys: set[str] = set()
    for index, item in enumerate(items):
        where = f"questions[{index}]"
        if not isinstance(item, dict):
            raise invalid_param(f"Param {where} must be a JSON object", blame=["questions"])
        qtype = _text(item, "type", where, required=True)
        if qtype not in QUESTION_TYPES:
            raise invalid_param(f"Param {where}[type] must be one of {{{', '.join(sorted(QUESTION_TYPES))}}}",
                                blame=["questions"])
        question: dict[str, Any] = {"type": qtype}
        if qtype == "CUSTOM":
            label = _text(item, "label", where, required=True)
            assert label is not None
            key = _text(item, "key", where, required=False) or derived_key(label)
            question["label"] = label
        else:
            key = STANDARD_KEYS.get(qtype, qtype.lower())
            question["label"] = str(item.get("label") or qtype.replace("_", " ").capitalize())
        if key in keys:
            raise invalid_param(f"Param {where}[key]: the key {key} is used by another question of the form",
                                blame=["questions"])
        keys.add(key)
        question["key"] = key
        if "options" in item:
            if qtype != "CUSTOM":
                raise invalid_param(f"Param {where}[options] is only valid on custom questions", blame=["questions"])
            question["options"] = _options(item["options"], where)
        if item.get("inline_context") is not None:
            question["inline_context"] = _text(item, "inline_context", where, required=False)
        unknown = set(item) - {"type", "key", "label", "options", "inline_context"}
        if unknown:
            raise invalid_param(f"Param {where}[{sorted(unknown)[0]}] is not a valid field of a question",
                                blame=["questions"])
        out.append(question)
    return out


def _options(raw: Any, where: str) -> list[dict[str, str]]:
    options = _list(raw, f"{where}[options]")
    if not options:
        raise invalid_param(f"Param {where}[options] must not be empty", blame=["questions"])
    out = []
    seen: set[str] = set()
    for n, option in enumerate(options):
        if not isinstance(option, dict):
            raise invalid_param(f"Param {where}[options][{n}] must be a JSON object", blame=["questions"])
        value = _text(option, "value", f"{where}[options][{n}]", required=True)
        assert value is not None
        key = _text(option, "key", f"{where}[options][{n}]", required=False) or value
        if key in seen:
            raise invalid_param(f"Param {where}[options][{n}]: option key {key} is used twice", blame=["questions"])
        seen.add(key)
        out.append({"key": key, "value": value})
    return out


def _privacy_policy(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        raise missing_param("privacy_policy")
    policy = _object(raw, "privacy_policy")
    url = _text(policy, "url", "privacy_policy", required=True)
    link_text = _text(policy, "link_text", "privacy_policy", required=True)
    assert url is not None
    assert link_text is not None
    if len(link_text) > MAX_LINK_TEXT:
        raise invalid_param(f"Param privacy_policy[link_text] must be at most {MAX_LINK_TEXT} characters",
                            blame=["privacy_policy"])
    return {"url": _url(url, "privacy_policy[url]"), "link_text": link_text}


def _thank_you_page(raw: Any, sb: Sandbox) -> dict[str, Any]:
    page = _object(raw, "thank_you_page")
    out: dict[str, Any] = {"id": sb.state.new_id()}
    for key in ("title", "body"):
        out[key] = _text(page, key, "thank_you_page", required=True)
    button = _text(page, "button_type", "thank_you_page", required=True)
    if button not in THANK_YOU_BUTTONS:
        allowed = ", ".join(sorted(THANK_YOU_BUTTONS))
        raise invalid_param(f"Param thank_you_page[button_type] must be one of {{{allowed}}}", blame=["thank_you_page"])
    out["button_type"] = button
    if button in WEBSITE_BUTTONS:
        website = _text(page, "website_url", "thank_you_page", required=True)
        assert website is not None
        out["website_url"] = _url(website, "thank_you_page[website_url]")
    if button == "CALL_BUSINESS":
        out["business_phone_number"] = _text(page, "business_phone_number", "thank_you_page", required=True)
    button_text = _text(page, "button_text", "thank_you_page", required=False)
    if button_text:
        out["button_text"] = button_text
    return out


def _context_card(raw: Any, sb: Sandbox) -> dict[str, Any]:
    card = _object(raw, "context_card")
    out: dict[str, Any] = {"id": sb.state.new_id()}
    style = _text(card, "style", "context_card", required=False) or "PARAGRAPH_STYLE"
    if style not in CONTEXT_STYLES:
        raise invalid_param("Param context_card[style] must be one of {LIST_STYLE, PARAGRAPH_STYLE}",
                            blame=["context_card"])
    out["style"] = style
    for key in ("title", "button_text"):
        value = _text(card, key, "context_card", required=False)
        if value:
            out[key] = value
    if "content" in card:
        content = _list(card["content"], "context_card[content]")
        if not all(isinstance(line, str) for line in content):
            raise invalid_param("Param context_card[content] must be an array of strings", blame=["context_card"])
        out["content"] = content
    return out


async def create_form(sb: Sandbox, req: GraphRequest, page: Node | None) -> dict[str, Any]:
    assert page is not None
    if req.token != page_token(page.id):
        raise not_page_token()
    params = req.params
    name = params.get("name")
    if not isinstance(name, str) or not name.strip():
        raise missing_param("name")
    if params.get("questions") in (None, ""):
        raise missing_param("questions")
    questions = _questions(params["questions"])
    policy = _privacy_policy(params.get("privacy_policy"))
    follow_up = params.get("follow_up_action_url")
    if params.get("thank_you_page") in (None, "") and not follow_up:
        raise invalid_param("A form needs a thank_you_page or a follow_up_action_url", blame=["thank_you_page"])
    locale = str(params.get("locale") or "EN_US")
    allowed = schema.node_type("Page").endpoint("POST", "leadgen_forms")
    locales = allowed.enums.get("locale_enum", frozenset()) if allowed else frozenset()
    if locale not in locales:
        raise invalid_param(f"Param locale must be one of {{{', '.join(sorted(locales))}}}", blame=["locale"])
    form_id = sb.state.new_id()
    fields: dict[str, Any] = {
        "name": name,
        "status": "ACTIVE",
        "locale": locale[:2].lower() + "_" + locale[3:],
        "created_time": sb.state.now(),
        "page_id": page.id,
        "questions": [{**q, "id": f"{form_id}{n}"} for n, q in enumerate(questions, start=1)],
        "privacy_policy_url": policy["url"],
        "legal_content": {"id": sb.state.new_id(), "privacy_policy": policy},
    }
    if follow_up:
        fields["follow_up_action_url"] = _url(str(follow_up), "follow_up_action_url")
    if params.get("thank_you_page") not in (None, ""):
        fields["thank_you_page"] = _thank_you_page(params["thank_you_page"], sb)
    if params.get("context_card") not in (None, ""):
        fields["context_card"] = _context_card(params["context_card"], sb)
    if params.get("question_page_custom_headline"):
        fields["question_page_custom_headline"] = str(params["question_page_custom_headline"])
    sb.state.add(Node(form_id, "leadgen_form", fields, page_id=page.id))
    return {"id": form_id}
