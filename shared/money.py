"""Money in Meta's terms: integers in the account currency's minor unit, defined by the currency's offset.

Offset 100 (cents) for most currencies, offset 1 for CLP COP CRC HUF ISK IDR JPY KRW PYG TWD VND
(docs/meta-api.md §11.1). The one place leadwire converts money: insights, rules and the executor all use it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from functools import cache

# Currencies whose Graph API offset is 1: amounts are whole units (note TWD and HUF) [docs/meta-api.md §11.1].
OFFSET_ONE = frozenset({"CLP", "COP", "CRC", "HUF", "ISK", "IDR", "JPY", "KRW", "PYG", "TWD", "VND"})


def offset(currency: str) -> int:
    """How many minor units make one major unit in Meta's API (1 or 100)."""
    return 1 if currency.upper() in OFFSET_ONE else 100


def to_minor(major: Decimal | int | str, currency: str) -> int:
    """Major units ("12.34" USD, "1500" JPY) to Meta's integer minor units, rounding half up."""
    value = Decimal(str(major)) * offset(currency)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_major(minor: int, currency: str) -> Decimal:
    """Meta's minor units to major units (1150 USD -> 11.50; 1150 JPY -> 1150)."""
    step = offset(currency)
    return (Decimal(minor) / step).quantize(Decimal(1) if step == 1 else Decimal("0.01"))


def parse_minor(value: object) -> int | None:
    """A budget as Meta returns it (numeric string, "0" when unset) as an int, or None when absent/zero."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    amount = int(str(value))
    return amount or None


# Currencies shown with a leading symbol; the others as `8,000 JPY`.
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "MXN": "MX$"}


def format_money(minor: float | int, currency: str, *, exact: bool = True) -> str:
    """Minor units for humans: `6240, "USD"` -> `$62.40`, `8000, "JPY"` -> `8,000 JPY`.

    With `exact=False` whole amounts drop the cents (`$50`), as rule thresholds are written.
    """
    step, symbol, code = _money_style(currency)
    major = minor / step
    whole = step == 1 or (not exact and float(major).is_integer())
    text = f"{major:,.0f}" if whole else f"{major:,.2f}"
    return f"{symbol}{text}{code}"


@cache
def _money_style(currency: str) -> tuple[int, str, str]:
    """Offset, leading symbol and trailing code of a currency's amounts (one of the two texts is empty)."""
    symbol = _SYMBOLS.get(currency.upper())
    return offset(currency), symbol or "", "" if symbol else f" {currency.upper()}"


def apply_percent(minor: int, percent: float) -> int:
    """`minor` changed by `percent`, rounded half up to a whole minor unit (never below 1)."""
    changed = Decimal(minor) * (Decimal(1) + Decimal(str(percent)) / 100)
    return max(1, int(changed.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
