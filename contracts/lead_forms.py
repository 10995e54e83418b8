"""A lead form (Meta Instant Form) as leadwire creates it: the `form` of a `create_lead_form` CampaignCommand.

Written by operators in YAML (`leadwire forms create FILE`), checked here before anything reaches Meta: Meta's
question types and thank-you buttons, a privacy policy with an http(s) URL and a link text of at most 70
characters, a thank-you page or a follow-up URL, custom questions with a `key` (the name the answer carries in
the lead's `field_data`, and so in the CRM), unique keys, multiple-choice options. Text must be printable: control
characters, bidirectional overrides, zero-width and private-use characters are refused (they hide what a person
reads), and text is stored NFC-normalized. A form definition holds no personal data.

Meta's reference: Graph API, Page → leadgen_forms (the sandbox models it in services/graph_sandbox/forms.py).
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["ContextCard", "FormOption", "FormQuestion", "LeadFormSpec", "PrivacyPolicy", "ThankYouPage", "clean_text"]

# Meta's standard question types leadwire offers (each fills a known `field_data` key), plus CUSTOM.
StandardQuestionType = Literal[
    "FULL_NAME", "FIRST_NAME", "LAST_NAME", "EMAIL", "PHONE", "CITY", "STATE", "PROVINCE", "ZIP", "POST_CODE",
    "COUNTRY", "STREET_ADDRESS", "DOB", "GENDER", "JOB_TITLE", "COMPANY_NAME", "WORK_EMAIL", "WORK_PHONE_NUMBER",
    "DATE_TIME",
]
QuestionType = Literal[StandardQuestionType, "CUSTOM"]
ButtonType = Literal["VIEW_WEBSITE", "CALL_BUSINESS", "MESSAGE_BUSINESS", "DOWNLOAD", "SCHEDULE_APPOINTMENT",
                     "VIEW_ON_FACEBOOK", "PROMO_CODE", "NONE", "WHATSAPP", "BOOK_ON_WEBSITE"]
Locale = Literal["AR_AR", "CS_CZ", "DA_DK", "DE_DE", "EL_GR", "EN_GB", "EN_US", "ES_ES", "ES_LA", "FI_FI", "FR_FR",
                 "HE_IL", "HI_IN", "HU_HU", "ID_ID", "IT_IT", "JA_JP", "KO_KR", "NB_NO", "NL_NL", "PL_PL", "PT_BR",
                 "PT_PT", "RO_RO", "RU_RU", "SV_SE", "TH_TH", "TR_TR", "VI_VN", "ZH_CN", "ZH_HK", "ZH_TW"]
WEBSITE_BUTTONS = frozenset({"VIEW_WEBSITE", "DOWNLOAD", "BOOK_ON_WEBSITE"})
MAX_LINK_TEXT = 70  # Meta: privacy_policy.link_text
MAX_QUESTIONS = 30
MAX_OPTIONS = 30

# Unicode categories refused in any text: control (Cc), format (Cf: bidi overrides, zero-width), surrogates (Cs),
# private use (Co), unassigned (Cn). Emoji are fine (Meta supports them in form text).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def clean_text(value: str, *, newlines: bool = False) -> str:
    """NFC-normalized `value`, trimmed; refuses invisible and control characters, saying which and where."""
    text = unicodedata.normalize("NFC", value).strip()
    for index, char in enumerate(text):
        if unicodedata.category(char) in _REFUSED_CATEGORIES and not (newlines and char == "\n"):
            name = unicodedata.name(char, "unnamed")
            raise ValueError(f"character {index + 1} is an invisible or control character (U+{ord(char):04X} "
                             f"{name}): type the text again without it")
    if not text:
        raise ValueError("must not be empty")
    return text


def _paragraph(value: str) -> str:
    return clean_text(value, newlines=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// address")
    return value


# Lengths are checked on the text as given, then it is cleaned (refused characters, NFC, trimmed).
Text60 = Annotated[str, Field(max_length=60), AfterValidator(clean_text)]
Text70 = Annotated[str, Field(max_length=MAX_LINK_TEXT), AfterValidator(clean_text)]
Text100 = Annotated[str, Field(max_length=100), AfterValidator(clean_text)]
Text200 = Annotated[str, Field(max_length=200), AfterValidator(clean_text)]
Paragraph = Annotated[str, Field(max_length=500), AfterValidator(_paragraph)]  # may hold line breaks
Phone = Annotated[str, Field(max_length=30), AfterValidator(clean_text)]
Url = Annotated[str, Field(max_length=2000), AfterValidator(clean_text), AfterValidator(_http_url)]
Key = Annotated[str, Field(pattern=r"^[a-z0-9_]{1,100}$",
                           description="Lower-case letters, digits and underscores: the answer's name in field_data.")]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FormOption(_Spec):
    value: Text100 = Field(description="What the person picks.", examples=["Yes"])
    key: Key | None = Field(default=None, description="The answer's value in field_data (default: value).")


class FormQuestion(_Spec):
    type: QuestionType = Field(examples=["EMAIL"])
    key: Key | None = Field(default=None, description="Required on CUSTOM questions.", examples=["accident_date"])
    label: Text200 | None = Field(
        default=None, description="The question as shown; required on CUSTOM questions.")
    options: list[FormOption] | None = Field(
        default=None, min_length=2, max_length=MAX_OPTIONS, description="Makes a CUSTOM question multiple choice.")
    inline_context: Text200 | None = None

    @model_validator(mode="after")
    def _custom(self) -> FormQuestion:
        if self.type == "CUSTOM":
            if not self.key:
                raise ValueError("a CUSTOM question needs a key (the name its answer carries in the CRM)")
            if not self.label:
                raise ValueError("a CUSTOM question needs a label (the question people read)")
        elif self.options is not None:
            raise ValueError(f"options are for CUSTOM questions only, not {self.type}")
        elif self.key is not None:
            raise ValueError(f"a {self.type} question has Meta's own key: leave `key` out")
        if self.options is not None:
            keys = [o.key or o.value for o in self.options]
            if len(set(keys)) != len(keys):
                raise ValueError("two options of the question have the same key or value")
        return self

    def graph(self) -> dict[str, Any]:
        """The question as Meta's `questions[]` item."""
        out: dict[str, Any] = {"type": self.type}
        for name in ("key", "label", "inline_context"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.options is not None:
            out["options"] = [{"key": o.key or o.value, "value": o.value} for o in self.options]
        return out


class PrivacyPolicy(_Spec):
    url: Url = Field(description="Your privacy policy (http or https).", examples=["https://example.com/privacy"])
    link_text: Text70 = Field(
        default="Privacy policy", description="At most 70 characters.")


class ThankYouPage(_Spec):
    title: Text60
    body: Paragraph
    button_type: ButtonType = "VIEW_WEBSITE"
    button_text: Text60 | None = None
    website_url: Url | None = None
    business_phone_number: Phone | None = None

    @model_validator(mode="after")
    def _button(self) -> ThankYouPage:
        if self.button_type in WEBSITE_BUTTONS and not self.website_url:
            raise ValueError(f"a {self.button_type} button needs website_url")
        if self.button_type == "CALL_BUSINESS" and not self.business_phone_number:
            raise ValueError("a CALL_BUSINESS button needs business_phone_number")
        return self


class ContextCard(_Spec):
    title: Text60 | None = None
    style: Literal["LIST_STYLE", "PARAGRAPH_STYLE"] = "PARAGRAPH_STYLE"
    content: list[Paragraph] = Field(default_factory=list, max_length=5)
    button_text: Text60 | None = None


class LeadFormSpec(_Spec):
    """One lead form. Its `name` is what leadwire knows it by on its Page: created once, never again."""

    name: Text200 = Field(examples=["Free case review - Houston"])
    locale: Locale = "EN_US"
    questions: list[FormQuestion] = Field(min_length=1, max_length=MAX_QUESTIONS)
    privacy_policy: PrivacyPolicy
    thank_you_page: ThankYouPage | None = None
    follow_up_action_url: Url | None = Field(default=None, description="Where people go after submitting, when "
                                                                      "there is no thank_you_page.")
    context_card: ContextCard | None = None

    @model_validator(mode="after")
    def _whole(self) -> LeadFormSpec:
        if self.thank_you_page is None and self.follow_up_action_url is None:
            raise ValueError("a form needs a thank_you_page (or a follow_up_action_url)")
        keys = [q.key or q.type for q in self.questions]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"questions asked twice (same key or type): {', '.join(twice)}")
        return self

    def graph_params(self) -> dict[str, Any]:
        """The form as `POST /{page-id}/leadgen_forms` params (objects as JSON text, as form fields go)."""
        params: dict[str, Any] = {
            "name": self.name,
            "locale": self.locale,
            "questions": json.dumps([q.graph() for q in self.questions], ensure_ascii=False),
            "privacy_policy": json.dumps(self.privacy_policy.model_dump(), ensure_ascii=False),
        }
        if self.thank_you_page is not None:
            params["thank_you_page"] = json.dumps(self.thank_you_page.model_dump(exclude_none=True),
                                                  ensure_ascii=False)
        if self.follow_up_action_url is not None:
            params["follow_up_action_url"] = self.follow_up_action_url
        if self.context_card is not None:
            params["context_card"] = json.dumps(self.context_card.model_dump(exclude_none=True), ensure_ascii=False)
        return params

    @property
    def digest(self) -> str:
        """SHA-256 of the definition: tells whether a form recorded under this name was made from it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()
