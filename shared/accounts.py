"""The ad accounts leadwire works on, each with its own Pages, pixel and rules (LEADWIRE_ACCOUNTS_FILE, YAML).

Without the file, the environment describes one configuration shared by every account it lists
(`META_AD_ACCOUNT_ID`, `META_PAGE_IDS`, `META_PIXEL_ID`, `RULES_DIR`): the single-account default. With it:

```yaml
accounts:
  - id: act_1000000001          # the ad account (act_ prefix)
    name: Houston               # optional label for people
    page_ids: ["1234567890"]    # the Pages whose leads belong to this account (lead capture, backfill, pixel choice)
    pixel_id: "778899001122334" # the dataset its conversions go to (a lead's Page picks its account)
    rules_dir: rules/houston    # optional: this account's rules instead of RULES_DIR (relative to this file)
    daily_budget_ceiling: 500   # optional: hard ceiling on its active daily budgets, major units of its currency
  - id: act_1000000002
    page_ids: ["2345678901"]
    pixel_id: "778899001122335"
    daily_budget_ceiling: 80000 # yen: one BUDGET_DAILY_CEILING cannot suit a USD and a JPY account alike
    targets:                    # optional: what the console's Performance and the daily report judge costs against
      cpl: 3000                 #   cost per lead, major units of the account's currency (yen here)
      cost_per_qualified: 9000
      cost_per_signed: 60000
```

Currency and time zone are never configured: they are read from Meta (`insights_poller`, table `ad_accounts`).
A target the account does not set falls back to CONSOLE_TARGET_* only when the account's currency is
CONSOLE_TARGET_CURRENCY (shared/targets.py): a yen account is never judged against a dollar target.
Unknown keys, a repeated account, a Page listed under two accounts (its leads' pixel would be ambiguous),
malformed ids and a missing rules directory are refused with the account and field named.

Pure: parsing and validation only (the file is read once, when the settings load).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.values import ACT_ID, DIGITS

__all__ = ["AccountConfig", "AccountTargets", "AccountsConfigError", "AccountsFile", "load_accounts",
           "parse_accounts"]

Digits = Annotated[str, Field(pattern=DIGITS)]


class AccountsConfigError(ValueError):
    """The accounts file is unreadable or invalid; the message names the account and field."""


def _text_ids(value: Any) -> Any:
    """YAML reads an unquoted id as an integer: take it as the digits it is."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


def _target(description: str) -> Any:
    return Field(default=None, gt=0, allow_inf_nan=False, description=description)


class AccountTargets(BaseModel):
    """An account's own targets, in MAJOR units of its currency (read from Meta): each replaces the matching
    CONSOLE_TARGET_* for this account. Positive and finite; unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpl: Decimal | None = _target("Cost per lead (Meta's leads).")
    cost_per_qualified: Decimal | None = _target("Cost per qualified lead (the CRM's qualified events).")
    cost_per_signed: Decimal | None = _target("Cost per signed case (the CRM's signed events).")

    @field_validator("cpl", "cost_per_qualified", "cost_per_signed", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        # "30" would pass as a Decimal; a target written as text is more likely a mistake ("$30", "30 USD").
        if isinstance(value, bool) or (value is not None and not isinstance(value, int | float)):
            raise ValueError("must be a number (major units of the account's currency, e.g. 30 or 12.5)")
        return value


class AccountConfig(BaseModel):
    """One ad account's own settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ACT_ID, description="The ad account id, with the act_ prefix.")
    name: str = Field(default="", max_length=200)
    page_ids: tuple[Digits, ...] = ()
    pixel_id: Digits | None = None
    rules_dir: Path | None = None
    daily_budget_ceiling: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Hard ceiling on the account's active daily budgets, in MAJOR units of its currency (read from "
                    "Meta): replaces BUDGET_DAILY_CEILING for this account.")
    targets: AccountTargets | None = None

    @field_validator("page_ids", "pixel_id", mode="before")
    @classmethod
    def _ids_as_text(cls, value: Any) -> Any:
        return _text_ids(value)

    @field_validator("page_ids")
    @classmethod
    def _pages_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({p for p in value if value.count(p) > 1})
        if repeated:
            raise ValueError(f"Page {repeated[0]} is listed twice")
        return value

    @field_validator("rules_dir")
    @classmethod
    def _a_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"rules_dir {value} is not a directory")
        return value


class AccountsFile(BaseModel):
    """The accounts file: every account once, every Page under one account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path | None = None
    accounts: tuple[AccountConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _each_once(self) -> AccountsFile:
        seen: dict[str, str] = {}
        ids = [a.id for a in self.accounts]
        for account in self.accounts:
            if ids.count(account.id) > 1:
                raise ValueError(f"account {account.id} is listed twice: give each account one entry")
            for page in account.page_ids:
                if page in seen:
                    raise ValueError(f"Page {page} is listed under {seen[page]} and {account.id}: a Page's leads "
                                     "belong to one account (its pixel receives their conversions)")
                seen[page] = account.id
        return self

    @property
    def account_ids(self) -> list[str]:
        return [a.id for a in self.accounts]

    @property
    def page_ids(self) -> list[str]:
        return [p for a in self.accounts for p in a.page_ids]


def _where(loc: Iterable[Any], accounts: list[Any]) -> str:
    """`accounts[1] (act_2).pixel_id` from a validation error's location."""
    parts = list(loc)
    text = ""
    for index, part in enumerate(parts):
        if isinstance(part, int):
            text += f"[{part}]"
            if index == 1 and parts[0] == "accounts" and part < len(accounts) and isinstance(accounts[part], dict):
                label = accounts[part].get("id")
                text += f" ({label})" if isinstance(label, str) and len(label) <= 40 else ""
        else:
            text += f".{part}" if text else str(part)
    return text


def parse_accounts(raw: Any, base: Path | None = None) -> AccountsFile:
    """Validate the file's content (relative `rules_dir`s are taken from `base`). Raises AccountsConfigError."""
    if not isinstance(raw, dict):
        raise AccountsConfigError("the file must be a mapping with an `accounts` list")
    accounts = raw.get("accounts")
    if isinstance(accounts, list) and base is not None:
        accounts = [
            {**a, "rules_dir": str(base / a["rules_dir"])}
            if isinstance(a, dict) and isinstance(a.get("rules_dir"), str) and not Path(a["rules_dir"]).is_absolute()
            else a
            for a in accounts
        ]
        raw = {**raw, "accounts": accounts}
    try:
        return AccountsFile.model_validate(raw)
    except ValidationError as exc:
        listed = accounts if isinstance(accounts, list) else []
        problems = [
            f"{_where(err['loc'], listed) or '<file>'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise AccountsConfigError("; ".join(problems[:10])) from None


def load_accounts(path: str | Path) -> AccountsFile:
    """Read and validate the accounts file. Raises AccountsConfigError."""
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AccountsConfigError(f"cannot read {file}: {exc.strerror or type(exc).__name__}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise AccountsConfigError(f"{file} is not valid YAML{where}") from None
    parsed = parse_accounts(raw, file.resolve().parent)
    return parsed.model_copy(update={"path": file})
