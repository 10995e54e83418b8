"""Lead form definitions in YAML (`leadwire forms create FILE`): read, checked, turned into a `LeadFormSpec`.

An example: docs/examples/lead_form.yaml; every field and rule: contracts/lead_forms.py. `page_id` is optional
(default `--page`, else the first of META_PAGE_IDS).

Reading, parsing and validation only; nothing here talks to Meta or the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from contracts.lead_forms import LeadFormSpec

MAX_FILE_BYTES = 64 * 1024  # a form is a few kilobytes; anything bigger is the wrong file


class FormDefinitionError(ValueError):
    """The definition cannot be used; the message names the file, each wrong field and why."""


def parse(text: str, *, source: str = "form definition") -> tuple[str | None, LeadFormSpec]:
    """(page_id or None, the form) from YAML text. Raises FormDefinitionError listing every problem."""
    if len(text.encode("utf-8")) > MAX_FILE_BYTES:
        raise FormDefinitionError(f"{source}: larger than {MAX_FILE_BYTES // 1024} KiB: not a lead form definition")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FormDefinitionError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise FormDefinitionError(f"{source}: expected a mapping with name, questions, privacy_policy, ...")
    body: dict[str, Any] = {str(k): v for k, v in data.items()}
    page = body.pop("page_id", None)
    if page is not None and not str(page).isdigit():
        raise FormDefinitionError(f"{source}: page_id: a Page id is digits (got {page!r})")
    try:
        spec = LeadFormSpec.model_validate(body)
    except ValidationError as exc:
        problems = [f"{source}: {_where(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise FormDefinitionError("\n".join(problems)) from None
    return (str(page) if page is not None else None), spec


def _where(loc: tuple[Any, ...]) -> str:
    """`questions[1].options[0].value` from pydantic's ('questions', 1, 'options', 0, 'value')."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(form)"


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        return f"{error['input']!r} is not one of {message.removeprefix('Input should be ')}"
    if error["type"] == "extra_forbidden":
        return "unknown field (check its spelling)"
    return message


def load(path: str | Path) -> tuple[str | None, LeadFormSpec]:
    file = Path(path)
    if not file.is_file():
        raise FormDefinitionError(f"{file}: no such file")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise FormDefinitionError(f"{file}: larger than {MAX_FILE_BYTES // 1024} KiB: not a lead form definition")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FormDefinitionError(f"{file}: not UTF-8 text") from None
    return parse(text, source=str(file))
