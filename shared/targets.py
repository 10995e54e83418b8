"""Cost targets per ad account, and the colour a cost gets against its target. Pure.

An account's targets are its own (`targets:` in LEADWIRE_ACCOUNTS_FILE, major units of its currency), field by
field; a field it does not set falls back to the global CONSOLE_TARGET_* only when the account's currency (read
from Meta) is CONSOLE_TARGET_CURRENCY, the currency those amounts are in. A yen account is never judged against a
dollar target: without targets of its own it is simply not coloured, and the pages say why.

The console's Performance page and the daily report both judge with `TargetBook.for_account`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from shared.accounts import AccountConfig, AccountTargets
from shared.money import format_money, offset, to_minor

__all__ = ["OVER_TOLERANCE", "TargetBook", "Targets", "target_state"]

# Up to this far over target a cost is amber ("warn"); beyond it, red ("bad").
OVER_TOLERANCE = Decimal("1.25")


def target_state(cost_minor: Decimal | int | None, target_major: Decimal | None, currency: str) -> str:
    """ok (at or under target), warn (up to 25% over), bad (more), or "" without a cost or a target."""
    if cost_minor is None or target_major is None:
        return ""
    cost_major = Decimal(cost_minor) / offset(currency)
    if cost_major <= target_major:
        return "ok"
    return "warn" if cost_major <= target_major * OVER_TOLERANCE else "bad"


@dataclass(frozen=True)
class Targets:
    """One account's targets in MAJOR units of its currency (None: no target for that cost)."""

    cpl: Decimal | None = None
    per_qualified: Decimal | None = None
    per_signed: Decimal | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.cpl, self.per_qualified, self.per_signed))

    def shown(self, currency: str) -> dict[str, str]:
        """The targets as money (`$30.00`, `3,000 JPY`) for labels; "" for a cost without one."""
        def text(value: Decimal | None) -> str:
            return "" if value is None else format_money(to_minor(value, currency), currency, exact=False)

        return {"cpl": text(self.cpl), "per_qualified": text(self.per_qualified), "per_signed": text(self.per_signed)}

    @classmethod
    def of(cls, own: AccountTargets | None) -> Targets:
        if own is None:
            return cls()
        return cls(own.cpl, own.cost_per_qualified, own.cost_per_signed)


@dataclass(frozen=True)
class TargetBook:
    """Every account's own targets and the global defaults with the currency they are in."""

    default: Targets = field(default_factory=Targets)
    default_currency: str = "USD"
    own: Mapping[str, Targets] = field(default_factory=dict)

    @classmethod
    def build(cls, default: Targets, default_currency: str, accounts: tuple[AccountConfig, ...]) -> TargetBook:
        return cls(default, default_currency.upper(),
                   {a.id: Targets.of(a.targets) for a in accounts if a.targets is not None})

    def for_account(self, account_id: str, currency: str) -> Targets:
        """The targets `account_id` (in `currency`) is judged against, field by field: its own, else the default
        if the account is in the default's currency, else none."""
        own = self.own.get(account_id, Targets())
        fallback = self.default if currency.upper() == self.default_currency else Targets()
        return Targets(
            own.cpl if own.cpl is not None else fallback.cpl,
            own.per_qualified if own.per_qualified is not None else fallback.per_qualified,
            own.per_signed if own.per_signed is not None else fallback.per_signed,
        )

    def unjudged(self, account_id: str, currency: str) -> str:
        """Why an account's costs get no colour although defaults exist ("" when that is not the case)."""
        if not self.default or self.for_account(account_id, currency):
            return ""
        return (f"{account_id} is in {currency.upper()}; CONSOLE_TARGET_* are in {self.default_currency} "
                "(CONSOLE_TARGET_CURRENCY): give it `targets:` of its own in LEADWIRE_ACCOUNTS_FILE")
