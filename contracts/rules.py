"""What an operator tells the rules engine: give or withdraw a rule's consent to act, approve or reject a decision
that a rule in shadow mode would have taken.

The rules engine owns its consent and review state; the `leadwire rules` command and the console never write it,
they send these messages and the engine applies them. Neither carries personal data: a rule name, a decision id,
an operator name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.envelope import Payload

RuleName = str


class RuleConsentChanged(Payload):
    """An operator enabled a rule to act (its decisions become commands to Meta) or put it back in shadow mode
    (its decisions are recorded and announced as "would …", nothing is sent to Meta)."""

    rule: RuleName = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$",
                           description="The rule's `name`.", examples=["kill-underperformers"])
    enabled: bool = Field(description="true: the rule acts; false: shadow mode.", examples=[True])
    by: str = Field(min_length=1, max_length=200, description="Who: an operator name, or `cli:<user>`.",
                    examples=["alice"])
    note: str = Field(default="", max_length=500, description="Why, in a few words (no personal data).")


class RuleDecisionReviewed(Payload):
    """An operator approved or rejected one decision a rule in shadow mode would have taken.

    Approving applies it now through the same guardrails as an enabled rule (fresh data, cooldown, limits, the
    account's ceiling; then the executor's hard limits): the rule is evaluated again for that object, and acts
    only if it still decides to. Rejecting records the verdict; nothing is sent.
    """

    decision_id: int = Field(gt=0, description="The decision's id in the rules engine's audit.", examples=[1234])
    verdict: Literal["approve", "reject"] = Field(examples=["approve"])
    by: str = Field(min_length=1, max_length=200, description="Who: an operator name, or `cli:<user>`.",
                    examples=["alice"])
