"""A rule's amounts in an account's currency. Pure.

A rule states its currency (`Rule.currency`, default USD) and every amount in it (thresholds, spend floors, budget
limits, a budget to set) is in that currency. An entity in the same currency is judged as written; one in another
currency is judged with the amounts converted at a configured rate (RULES_CURRENCY_RATES, e.g. `USD/JPY=150`:
one dollar is 150 yen), and with no rate it is not judged by that rule at all. So `CPL > 50` in a USD rule is
`CPL > 7,500 JPY` on a yen account at 150, never `CPL > 50 JPY`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from services.rules_engine.rule_terms import MONEY_METRICS
from services.rules_engine.rules import Rule

Rates = Mapping[tuple[str, str], float]  # (from, to) -> units of `to` for one unit of `from`

_ENTRY = re.compile(r"^([A-Za-z]{3})/([A-Za-z]{3})=([0-9]+(?:\.[0-9]+)?)$")


def parse_rates(entries: Iterable[str]) -> dict[tuple[str, str], float]:
    """``["USD/JPY=150", "EUR/USD=1.08"]`` -> ``{("USD", "JPY"): 150.0, ("EUR", "USD"): 1.08}``.

    Raises:
        ValueError: an entry is not ``AAA/BBB=rate`` with a positive rate.
    """
    out: dict[tuple[str, str], float] = {}
    for entry in entries:
        match = _ENTRY.match(entry.strip().replace(" ", ""))
        if match is None or float(match[3]) <= 0:
            raise ValueError(f"{entry!r}: write FROM/TO=RATE with a positive rate, e.g. USD/JPY=150")
        out[(match[1].upper(), match[2].upper())] = float(match[3])
    return out


def rate(source: str, target: str, rates: Rates) -> float | None:
    """Units of ``target`` for one unit of ``source``: 1 for the same currency, a configured rate or its inverse,
    or a cross rate through one currency both are quoted against; None when the rates do not say."""
    source, target = source.upper(), target.upper()
    if source == target:
        return 1.0
    direct = _direct(source, target, rates)
    if direct is not None:
        return direct
    middles = {c for pair in rates for c in pair} - {source, target}
    for middle in sorted(middles):
        first, second = _direct(source, middle, rates), _direct(middle, target, rates)
        if first is not None and second is not None:
            return first * second
    return None


def _direct(source: str, target: str, rates: Rates) -> float | None:
    if (source, target) in rates:
        return rates[(source, target)]
    if (target, source) in rates:
        return 1.0 / rates[(target, source)]
    return None


def localize(rule: Rule, currency: str, rates: Rates) -> Rule | None:
    """``rule`` with its amounts in ``currency`` (itself when it is the rule's), or None without a rate."""
    factor = rate(rule.currency, currency, rates)
    if factor is None:
        return None
    if factor == 1.0 and rule.currency == currency.upper():
        return rule
    data = rule.model_dump(by_alias=True, exclude_none=True)
    data["currency"] = currency.upper()
    for key in ("conditions",):
        data[key] = _convert_node(data[key], factor)
    data["min_data"] = [_convert_node(c, factor) for c in data.get("min_data", [])]
    guardrails = data.get("guardrails", {})
    for key in ("min_budget", "max_budget"):
        if guardrails.get(key) is not None:
            guardrails[key] = guardrails[key] * factor
    for action in data["actions"]:
        if action.get("type") == "set_budget":
            action["amount"] = action["amount"] * factor
        elif action.get("type") == "rebalance":
            action["target"] = action["target"] * factor
            action["min_move"] = action["min_move"] * factor
    return Rule.model_validate(data)


def _convert_node(node: dict[str, Any], factor: float) -> dict[str, Any]:
    if "all" in node or "any" in node:
        key = "all" if "all" in node else "any"
        return {key: [_convert_node(child, factor) for child in node[key]]}
    if node.get("value") is not None and node["metric"] in MONEY_METRICS:
        node["value"] = node["value"] * factor
    if node.get("infinite_above_spend") is not None:
        node["infinite_above_spend"] = node["infinite_above_spend"] * factor
    return node
