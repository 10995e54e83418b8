"""Configuration from the environment (and `.env`), one pydantic-settings block per concern.

Names follow what users already have from Meta's guides (`META_ACCESS_TOKEN`, `META_AD_ACCOUNT_ID`, ...).
Secrets are `SecretStr`, so they never show in reprs, logs or validation errors.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import (
    AliasChoices,
    AnyUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.accounts import AccountConfig, AccountsConfigError, AccountsFile, load_accounts
from shared.budget_guardrails import MAX_BUDGET_CHANGES_PER_HOUR, MAX_BUDGET_STEP_PCT
from shared.targets import TargetBook, Targets

T = TypeVar("T", bound=BaseSettings)

_COMMON = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable, never its value."""


class MetaSettings(BaseSettings):
    """Meta app, token and objects. Empty token = demo mode against the Graph sandbox.

    The ad accounts are `META_AD_ACCOUNT_ID` sharing `META_PAGE_IDS` and `META_PIXEL_ID` (one configuration), or
    the accounts of `LEADWIRE_ACCOUNTS_FILE` (`shared.accounts`), each with its own Pages, pixel and rules: then
    `ad_account_id` and `page_ids` are the file's, and the environment's, if set, may only list what it lists.
    """

    model_config = SettingsConfigDict(**_COMMON, env_prefix="META_", populate_by_name=True)

    app_id: str = ""
    app_secret: SecretStr = SecretStr("")
    access_token: SecretStr = SecretStr("")
    page_access_token: SecretStr = SecretStr("")
    ad_account_id: Annotated[list[str], NoDecode] = Field(default_factory=list)
    page_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)
    pixel_id: str = ""
    webhook_verify_token: SecretStr = SecretStr("")
    api_version: str = Field(default="v26.0", pattern=r"^v\d+\.\d+$")
    graph_url: AnyUrl = AnyUrl("https://graph.facebook.com")
    usage_slowdown_threshold: float = Field(default=75.0, ge=1, le=100)
    # Longest a rate-limit scope is held on leadwire's own projection (or on a throttle Meta gave no time for)
    # before one call probes it for fresh usage headers.
    usage_probe_seconds: float = Field(default=180.0, gt=0, le=3600)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    # Longest a service waits for a throttled scope before handing the message back as a delayed retry.
    graph_max_wait_seconds: float = Field(default=30.0, ge=0)
    # How often the lead fetcher re-checks token, permissions and Page subscriptions (0 = never).
    health_check_seconds: float = Field(default=3600.0, ge=0)
    # Per-account Pages, pixel and rules (shared/accounts.py); last, so its check sees the fields above.
    accounts_file: Annotated[AccountsFile | None, NoDecode] = Field(default=None, alias="LEADWIRE_ACCOUNTS_FILE")

    @field_validator("ad_account_id", "page_ids", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("ad_account_id")
    @classmethod
    def _act_prefix(cls, value: list[str]) -> list[str]:
        for account in value:
            if not account.startswith("act_") or not account[4:].isdigit():
                raise ValueError("must look like act_<digits>")
        return value

    @field_validator("accounts_file", mode="before")
    @classmethod
    def _read_accounts(cls, value: object) -> object:
        if value is None or value == "":
            return None
        if isinstance(value, str | Path):
            try:
                return load_accounts(value)
            except AccountsConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("accounts_file")
    @classmethod
    def _environment_agrees(cls, value: AccountsFile | None, info: ValidationInfo) -> AccountsFile | None:
        if value is None:
            return None
        for variable, field, listed in (("META_AD_ACCOUNT_ID", "ad_account_id", value.account_ids),
                                        ("META_PAGE_IDS", "page_ids", value.page_ids)):
            stray = [item for item in info.data.get(field) or [] if item not in listed]
            if stray:
                raise ValueError(f"{variable} lists {stray[0]}, which the accounts file does not: list every "
                                 "account and Page in the file (or unset the variable)")
        return value

    @model_validator(mode="after")
    def _accounts_from_file(self) -> MetaSettings:
        if self.accounts_file is not None:
            self.ad_account_id = self.accounts_file.account_ids
            self.page_ids = self.accounts_file.page_ids
        return self

    @property
    def accounts(self) -> tuple[AccountConfig, ...]:
        """Every ad account with its own settings; without an accounts file, those of the environment."""
        if self.accounts_file is not None:
            return self.accounts_file.accounts
        return tuple(AccountConfig(id=a, page_ids=tuple(self.page_ids), pixel_id=self.pixel_id or None)
                     for a in self.ad_account_id)

    def account(self, account_id: str) -> AccountConfig | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    def pixel_for_page(self, page_id: str | None) -> str:
        """The pixel a lead of this Page converts on: its account's, else META_PIXEL_ID ("" when neither)."""
        if page_id and self.accounts_file is not None:
            for account in self.accounts_file.accounts:
                if page_id in account.page_ids and account.pixel_id:
                    return account.pixel_id
        return self.pixel_id

    def pixels_by_page(self) -> dict[str, str]:
        """Page -> its account's pixel, for the Pages of accounts with a pixel of their own."""
        if self.accounts_file is None:
            return {}
        return {page: a.pixel_id for a in self.accounts_file.accounts if a.pixel_id for page in a.page_ids}

    def budget_ceilings(self) -> dict[str, float]:
        """Account -> its own daily budget ceiling (major units), replacing BUDGET_DAILY_CEILING for it."""
        return {a.id: a.daily_budget_ceiling for a in self.accounts if a.daily_budget_ceiling is not None}

    def rules_dirs(self) -> dict[str, Path]:
        """Account -> its own rule directory (accounts without one use RULES_DIR)."""
        return {a.id: a.rules_dir for a in self.accounts if a.rules_dir is not None}

    @property
    def demo(self) -> bool:
        """True when no real token is configured: the services talk to the Graph sandbox."""
        return not self.access_token.get_secret_value()

    @property
    def graph_base(self) -> str:
        return str(self.graph_url).rstrip("/")


class CrmOutcomeSettings(BaseSettings):
    """Which CRM event names (case-insensitive) count as qualified leads and as signed cases: for the rules engine's
    `qualified_leads`, `signed_cases` and cost-per metrics, and the console's costs (RULES_QUALIFIED_EVENTS,
    RULES_SIGNED_EVENTS, comma-separated)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_prefix="RULES_")

    qualified_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["QualifiedLead", "Qualified Lead", "MQL"]
    )
    signed_events: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["SignedCase", "Signed Case", "Purchase"]
    )

    @field_validator("qualified_events", "signed_events", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


class NotifySettings(BaseSettings):
    """Where notifications go (the rules engine's alerts, the daily report). Unset Slack or SMTP settings turn that
    channel off (the log always works).

    Args:
        slack_webhook_url: a Slack incoming-webhook URL (it is a credential: anyone holding it can post).
        smtp_host / smtp_port / smtp_username / smtp_password / smtp_security: the SMTP relay; `starttls`
            (default, port 587), `ssl` (port 465) or `none` (a local relay).
        smtp_from: the From address. notify_email_to: default recipients (comma-separated).
    """

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    slack_webhook_url: SecretStr = SecretStr("")
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_from: str = "leadwire@localhost"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    notify_email_to: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("notify_email_to", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_webhook_url.get_secret_value())

    @property
    def email_enabled(self) -> bool:
        return bool(self.smtp_host)


class BrokerSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON)

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # Attempts for a failure nothing classifies (a bug) before the message is parked. Transient failures (a
    # dependency down) are retried until RETRY_HORIZON_HOURS instead; permanent ones park at once.
    retry_attempts: int = Field(default=5, ge=1, le=50, alias="RETRY_ATTEMPTS")
    retry_horizon_hours: float = Field(default=24.0, gt=0, le=24 * 7, alias="RETRY_HORIZON_HOURS")
    retry_backoff_seconds: float = Field(default=1.0, gt=0, le=3600, alias="RETRY_BACKOFF_SECONDS")
    retry_backoff_max_seconds: float = Field(default=900.0, gt=0, le=24 * 3600, alias="RETRY_BACKOFF_MAX_SECONDS")
    breaker_failures: int = Field(default=5, ge=1, le=1000, alias="BREAKER_FAILURES")
    breaker_probe_max_seconds: float = Field(default=60.0, ge=1, le=3600, alias="BREAKER_PROBE_MAX_SECONDS")
    alert_reminder_minutes: float = Field(default=60.0, gt=0, le=24 * 60, alias="ALERT_REMINDER_MINUTES")
    prefetch_count: int = Field(default=32, ge=1, le=10_000, alias="PREFETCH_COUNT")
    graceful_timeout_seconds: float = Field(default=15.0, gt=0, alias="GRACEFUL_TIMEOUT_SECONDS")


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON)

    database_url: SecretStr = SecretStr("postgresql://leadwire:leadwire@127.0.0.1:5432/leadwire")
    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)


class OpsSettings(BaseSettings):
    """Where each service serves /healthz, /readyz and /metrics (the ingress: on INGRESS_PORT, beside its webhooks)."""

    model_config = SettingsConfigDict(**_COMMON)

    ops_host: str = "127.0.0.1"
    # `leadwire run` serves service number k of the registry on OPS_PORT_BASE + k (8081-8086 by default), so a
    # second copy on the same host runs beside the first with another base.
    ops_port_base: int = Field(default=8081, ge=1, le=65535 - 16)
    # One service run alone (a container): its port, instead of the base's. 0 picks a free port.
    ops_port: int | None = Field(default=None, ge=0, le=65535)
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="auto", pattern=r"^(auto|json|text)$")


def iso_country(value: str) -> str:
    """A settings validator: an ISO 3166-1 alpha-2 country code (upper case)."""
    from shared.meta.customer_data import ISO_ALPHA2

    code = value.strip().upper()
    if code.lower() not in ISO_ALPHA2:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code such as US")
    return code


def iana_zone(value: str) -> str:
    """A settings validator: empty, or an IANA time zone name."""
    if value:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone such as America/Phoenix") from None
    return value


class BudgetGuardrailSettings(BaseSettings):
    """Budget guardrails of the rules engine and the campaign executor (one set for both; `shared.budget_guardrails`).

    Args:
        daily_ceiling: ceiling on the sum of active daily budgets (campaigns and ad sets) of one ad account, in
            MAJOR units of that account's currency (dollars, yen); raises, unpauses and ACTIVE creates that would
            cross it are not made. Unset = the executor derives it: `max_multiple_of_first_seen` times the account's
            total when leadwire first saw it (the rules engine then has no ceiling of its own). (Was
            RULES_ACCOUNT_DAILY_BUDGET_CEILING, still read.)
        max_step_pct: largest budget change the executor applies per command, in percent of the current budget.
        max_changes_per_hour: budget changes per ad set per rolling hour (Meta blocks the 5th for an hour).
        max_multiple_of_first_seen: hard limit of the executor: no campaign or ad set daily budget above this
            multiple of its budget when leadwire first saw it (and the derived account ceiling); `force` cannot
            pass it.
        max_increases_per_week: hard limit of the executor: budget increases per campaign or ad set per rolling
            7 days; `force` cannot pass it.
    """

    model_config = SettingsConfigDict(**_COMMON, env_prefix="BUDGET_", populate_by_name=True)

    daily_ceiling: float | None = Field(
        default=None, gt=0, validation_alias=AliasChoices("BUDGET_DAILY_CEILING", "RULES_ACCOUNT_DAILY_BUDGET_CEILING")
    )
    max_step_pct: float = Field(
        default=MAX_BUDGET_STEP_PCT, gt=0, le=1000,
        validation_alias=AliasChoices("BUDGET_MAX_STEP_PCT", "EXECUTOR_MAX_BUDGET_STEP_PCT"),
    )
    max_changes_per_hour: int = Field(
        default=MAX_BUDGET_CHANGES_PER_HOUR, ge=1, le=100,
        validation_alias=AliasChoices("BUDGET_MAX_CHANGES_PER_HOUR", "EXECUTOR_MAX_BUDGET_CHANGES_PER_HOUR"),
    )
    max_multiple_of_first_seen: float = Field(default=2.0, ge=1, le=100)
    max_increases_per_week: int = Field(default=3, ge=1, le=100)


class TargetSettings(BaseSettings):
    """The default cost targets of the console's Performance page and the daily report (`CONSOLE_TARGET_*`).

    Args:
        cpl / cost_per_qualified / cost_per_signed: targets in MAJOR units of `currency`; a cost is green at or
            under its target, amber up to 25% over, red beyond.
        currency: the currency those amounts are in (default USD, as a rule's amounts). They judge only accounts
            in that currency (read from Meta); an account in another one is judged by the `targets:` of its own in
            LEADWIRE_ACCOUNTS_FILE, or not at all (shared/targets.py).
    """

    model_config = SettingsConfigDict(**_COMMON, env_prefix="CONSOLE_TARGET_")

    cpl: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    cost_per_qualified: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    cost_per_signed: Decimal | None = Field(default=None, gt=0, allow_inf_nan=False)
    currency: str = Field(default="USD", pattern=r"^[A-Za-z]{3}$")

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    def defaults(self) -> Targets:
        return Targets(self.cpl, self.cost_per_qualified, self.cost_per_signed)


class Settings:
    """Everything one process needs. Each block reads its own variables the first time it is used.

    Tests and tools pass blocks explicitly: `Settings(database=DatabaseSettings(database_url=...))`. A service
    with variables of its own declares its own block class and reads it with `settings.block(MyBlock)`.
    """

    def __init__(self, **blocks: BaseSettings) -> None:
        self._blocks: dict[type[BaseSettings], BaseSettings] = {type(b): b for b in blocks.values()}

    def block(self, cls: type[T]) -> T:
        if cls not in self._blocks:
            self._blocks[cls] = _load(cls)
        return self._blocks[cls]  # type: ignore[return-value]

    def replace(self, *blocks: BaseSettings) -> Settings:
        """A copy with some blocks swapped."""
        copy = Settings()
        copy._blocks = {**self._blocks, **{type(b): b for b in blocks}}
        return copy

    @property
    def meta(self) -> MetaSettings:
        return self.block(MetaSettings)

    @property
    def broker(self) -> BrokerSettings:
        return self.block(BrokerSettings)

    @property
    def database(self) -> DatabaseSettings:
        return self.block(DatabaseSettings)

    @property
    def ops(self) -> OpsSettings:
        return self.block(OpsSettings)

    def target_book(self) -> TargetBook:
        """Each ad account's cost targets: its own (accounts file), else CONSOLE_TARGET_* in their currency."""
        defaults = self.block(TargetSettings)
        return TargetBook.build(defaults.defaults(), defaults.currency, self.meta.accounts)

    def __repr__(self) -> str:
        return f"Settings({', '.join(cls.__name__ for cls in self._blocks)})"


def _load(cls: type[T]) -> T:
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, cls)) from None


def describe_validation_error(exc: ValidationError, cls: type[BaseSettings]) -> str:
    """One line per bad variable, naming it (never echoing its value)."""
    prefix = cls.model_config.get("env_prefix", "") or ""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        info = cls.model_fields.get(field)
        if info is None:  # a field read by its alias is located by it
            info = next((f for f in cls.model_fields.values() if f.alias == field), None)
        name = (info.alias if info and info.alias else f"{prefix}{field}").upper()
        problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
    return "invalid setting " + "; ".join(problems)
