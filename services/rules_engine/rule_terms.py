"""The terms rules are written in: levels, metrics, windows, operators, and the condition tree (`all` / `any` /
`not` of metric comparisons). The rule itself, its scope, actions and guardrails: `rules.py`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator


class RuleModel(BaseModel):
    """Every part of a rule: frozen, a key it does not know is an error (a typo is never ignored), and a number must
    be finite (`.inf` or `1e400` in a YAML file is no threshold, amount or target: contracts/values.py)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


Level = Literal["adset", "campaign", "ad"]

# Metrics read from insights (summed over a window) or derived from those sums.
InsightMetric = Literal[
    "spend",
    "impressions",
    "reach",
    "clicks",
    "ctr",
    "cpm",
    "frequency",
    "leads",
    "cpl",
    "qualified_leads",
    "signed_cases",
    "cost_per_qualified_lead",
    "cost_per_signed_case",
]
# Attributes of the entity itself (no window); useful on the right of a metric-vs-metric comparison.
AttributeMetric = Literal["daily_budget", "lifetime_budget"]
MetricName = Literal[InsightMetric, AttributeMetric]

INSIGHT_METRICS: frozenset[str] = frozenset(InsightMetric.__args__)  # type: ignore[attr-defined]
ATTRIBUTE_METRICS: frozenset[str] = frozenset(AttributeMetric.__args__)  # type: ignore[attr-defined]
MONEY_METRICS: frozenset[str] = frozenset(
    {"spend", "cpm", "cpl", "cost_per_qualified_lead", "cost_per_signed_case", "daily_budget", "lifetime_budget"}
)
# Spend divided by a count: undefined when the count is zero unless the condition says otherwise
# (`infinite_above_spend`).
COST_METRICS: frozenset[str] = frozenset({"cpl", "cost_per_qualified_lead", "cost_per_signed_case"})
# Metrics that are not defined when their denominator is zero (e.g. CPL with no leads).
DERIVED_METRICS: frozenset[str] = frozenset(
    {"ctr", "cpm", "frequency", "cpl", "cost_per_qualified_lead", "cost_per_signed_case"}
)

# Accepted spellings -> canonical operator.
_OPERATORS: dict[str, str] = {
    ">": ">",
    "gt": ">",
    ">=": ">=",
    "gte": ">=",
    "<": "<",
    "lt": "<",
    "<=": "<=",
    "lte": "<=",
    "==": "==",
    "=": "==",
    "eq": "==",
    "!=": "!=",
    "ne": "!=",
}
Operator = Literal[">", ">=", "<", "<=", "==", "!="]


_WINDOW_RE = re.compile(r"^(today|yesterday|lifetime|(last|previous)_([1-9][0-9]{0,2})_days?)$")


def window_bounds(window: str) -> tuple[int, int | None]:
    """Day offsets (0 = today in the account's timezone) covered by a window, inclusive; None = unbounded.

    ``last_N_days`` includes today, like Meta rules' ``LAST_N_DAYS`` presets (docs/meta-api.md §10.2);
    ``previous_N_days`` is the N whole days before today (Meta's ``LAST_ND``).
    """
    if window == "today":
        return 0, 0
    if window == "yesterday":
        return 1, 1
    if window == "lifetime":
        return 0, None
    match = _WINDOW_RE.match(window)
    if match is None:
        raise ValueError(f"unknown window {window!r}")
    n = int(match.group(3))
    return (0, n - 1) if match.group(2) == "last" else (1, n)


class MetricRef(RuleModel):
    """The right-hand side of a metric-vs-metric comparison: ``factor`` × ``metric`` over ``window``."""

    metric: MetricName
    window: str | None = Field(default=None, description="Defaults to the left-hand side's window.")
    factor: float = 1.0

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str | None) -> str | None:
        if value is not None:
            window_bounds(value)
        return value


class Condition(RuleModel):
    """``metric`` over ``window`` compared with a number (``value``) or with another metric (``compare_to``)."""

    metric: MetricName
    window: str = "today"
    op: Operator
    value: float | None = Field(default=None, description="Money in major units of the rule's currency.")
    compare_to: MetricRef | None = None
    infinite_above_spend: float | None = Field(
        default=None, ge=0,
        description="Cost-per metrics (cpl, cost_per_qualified_lead, cost_per_signed_case): with none of what is "
                    "paid for (0 leads, ...), the cost counts as infinite once the window's spend reaches this "
                    "amount (major units of the rule's currency). Without it, or below it, the cost is undefined "
                    "and the condition does not match.",
    )

    @field_validator("op", mode="before")
    @classmethod
    def _normalise_op(cls, value: Any) -> Any:
        if isinstance(value, str):
            canonical = _OPERATORS.get(value.strip().lower())
            if canonical is None:
                raise ValueError(f"unknown operator {value!r}; use one of > >= < <= == !=")
            return canonical
        return value

    @field_validator("window")
    @classmethod
    def _check_window(cls, value: str) -> str:
        try:
            window_bounds(value)
        except ValueError:
            raise ValueError(
                f"unknown window {value!r}; use today, yesterday, lifetime, last_N_days or previous_N_days"
            ) from None
        return value

    @model_validator(mode="after")
    def _one_right_hand_side(self) -> Condition:
        if (self.value is None) == (self.compare_to is None):
            raise ValueError("give exactly one of 'value' or 'compare_to'")
        if self.infinite_above_spend is not None and self.metric not in COST_METRICS:
            raise ValueError(f"infinite_above_spend applies to {', '.join(sorted(COST_METRICS))}, not {self.metric}")
        if self.compare_to is not None and (
            (self.metric in MONEY_METRICS) != (self.compare_to.metric in MONEY_METRICS)
        ):
            raise ValueError(
                f"cannot compare {self.metric} with {self.compare_to.metric}: one is money and the other is not"
            )
        return self

    @property
    def right_window(self) -> str:
        return (self.compare_to.window if self.compare_to else None) or self.window


def _node_kind(value: Any) -> str:
    if isinstance(value, dict) and ("all" in value or "any" in value):
        return "group"
    if isinstance(value, Group):
        return "group"
    return "condition"


class Group(RuleModel):
    """``all`` (AND) or ``any`` (OR) of conditions and nested groups."""

    all_: list[Node] | None = Field(default=None, alias="all", min_length=1)
    any_: list[Node] | None = Field(default=None, alias="any", min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _list_means_all(cls, value: Any) -> Any:
        return {"all": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> Group:
        if (self.all_ is None) == (self.any_ is None):
            raise ValueError("a group has exactly one of 'all' or 'any'")
        return self

    @property
    def mode(self) -> Literal["all", "any"]:
        return "all" if self.all_ is not None else "any"

    @property
    def children(self) -> list[Condition | Group]:
        return self.all_ if self.all_ is not None else (self.any_ or [])

    def leaves(self) -> Iterator[Condition]:
        for child in self.children:
            if isinstance(child, Group):
                yield from child.leaves()
            else:
                yield child


Node = Annotated[
    Annotated[Condition, Tag("condition")] | Annotated[Group, Tag("group")],
    Discriminator(_node_kind),
]


Group.model_rebuild()


class TextFilter(RuleModel):
    """Filter on a name: every given test must pass. Case-insensitive unless ``case_sensitive``."""

    contains: str | None = None
    not_contains: str | None = None
    regex: str | None = None
    case_sensitive: bool = False

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
        return value
