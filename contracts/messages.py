"""Every message leadwire sends or accepts: its envelope class, literal type and version, routing key.

A consumer validates the whole envelope, so an unknown `type` or `schema_version` is a validation error, and the
message is parked with that error instead of being guessed at.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from contracts.alerts import AlertRaised
from contracts.commands import CampaignCommand, CommandResult
from contracts.conversions import ConversionRequested, ConversionSent
from contracts.envelope import Envelope
from contracts.insights import InsightsUpdated
from contracts.leads import LeadCaptured, LeadgenReceived, LeadSynced, RedeliverLead
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed


class RoutingKey:
    """The routing key of each message on the `leadwire` topic exchange; two are pinned for outside systems."""

    LEADGEN_RECEIVED = "lead.leadgen_received.v1"
    LEAD_CAPTURED = "lead.captured.v1"
    LEAD_SYNCED = "lead.synced.v1"
    REDELIVER_LEAD = "lead.redeliver.v1"
    CONVERSION_REQUESTED = "conversion.requested"  # pinned for outside systems
    CONVERSION_SENT = "conversion.sent.v2"
    INSIGHTS_UPDATED = "insights.updated.v1"
    CAMPAIGN_COMMAND = "campaign.command"  # pinned for outside systems
    COMMAND_RESULT = "campaign.command_result.v1"
    ALERT_RAISED = "alert.raised.v1"
    RULE_CONSENT_CHANGED = "rules.consent_changed.v1"
    RULE_DECISION_REVIEWED = "rules.decision_reviewed.v1"


class LeadgenReceivedMessage(Envelope[LeadgenReceived]):
    routing_key: ClassVar[str] = RoutingKey.LEADGEN_RECEIVED
    type: Literal["LeadgenReceived"] = "LeadgenReceived"
    schema_version: Literal[1] = 1


class LeadCapturedMessage(Envelope[LeadCaptured]):
    routing_key: ClassVar[str] = RoutingKey.LEAD_CAPTURED
    type: Literal["LeadCaptured"] = "LeadCaptured"
    schema_version: Literal[1] = 1


class LeadSyncedMessage(Envelope[LeadSynced]):
    routing_key: ClassVar[str] = RoutingKey.LEAD_SYNCED
    type: Literal["LeadSynced"] = "LeadSynced"
    schema_version: Literal[1] = 1


class RedeliverLeadMessage(Envelope[RedeliverLead]):
    """A command for lead_fetcher: emit a stored lead's LeadCaptured again."""

    routing_key: ClassVar[str] = RoutingKey.REDELIVER_LEAD
    type: Literal["RedeliverLead"] = "RedeliverLead"
    schema_version: Literal[1] = 1


class ConversionRequestedMessage(Envelope[ConversionRequested]):
    """A CRM outcome (or any conversion) to send to Meta's Conversions API. Outside systems publish this."""

    routing_key: ClassVar[str] = RoutingKey.CONVERSION_REQUESTED
    type: Literal["ConversionRequested"] = "ConversionRequested"
    schema_version: Literal[1] = 1


class ConversionSentMessage(Envelope[ConversionSent]):
    """Meta accepted a Conversions API request: one message per request. Version 2 (version 1 was one per event)."""

    routing_key: ClassVar[str] = RoutingKey.CONVERSION_SENT
    type: Literal["ConversionSent"] = "ConversionSent"
    schema_version: Literal[2] = 2


class InsightsUpdatedMessage(Envelope[InsightsUpdated]):
    routing_key: ClassVar[str] = RoutingKey.INSIGHTS_UPDATED
    type: Literal["InsightsUpdated"] = "InsightsUpdated"
    schema_version: Literal[1] = 1


class AlertRaisedMessage(Envelope[AlertRaised]):
    routing_key: ClassVar[str] = RoutingKey.ALERT_RAISED
    type: Literal["AlertRaised"] = "AlertRaised"
    schema_version: Literal[1] = 1


class CampaignCommandMessage(Envelope[CampaignCommand]):
    """A command for the campaign executor. Outside systems publish this on `campaign.command`."""

    routing_key: ClassVar[str] = RoutingKey.CAMPAIGN_COMMAND
    type: Literal["CampaignCommand"] = "CampaignCommand"
    schema_version: Literal[1] = 1


class CommandResultMessage(Envelope[CommandResult]):
    """The outcome of one CampaignCommand."""

    routing_key: ClassVar[str] = RoutingKey.COMMAND_RESULT
    type: Literal["CommandResult"] = "CommandResult"
    schema_version: Literal[1] = 1


class RuleConsentChangedMessage(Envelope[RuleConsentChanged]):
    """An operator enabled a rule, or put it back in shadow mode (`leadwire rules enable|disable`, the console)."""

    routing_key: ClassVar[str] = RoutingKey.RULE_CONSENT_CHANGED
    type: Literal["RuleConsentChanged"] = "RuleConsentChanged"
    schema_version: Literal[1] = 1


class RuleDecisionReviewedMessage(Envelope[RuleDecisionReviewed]):
    """An operator approved or rejected a shadow-mode decision (`leadwire rules approve|reject`, the console)."""

    routing_key: ClassVar[str] = RoutingKey.RULE_DECISION_REVIEWED
    type: Literal["RuleDecisionReviewed"] = "RuleDecisionReviewed"
    schema_version: Literal[1] = 1


MESSAGES: tuple[type[Envelope[Any]], ...] = (
    LeadgenReceivedMessage,
    LeadCapturedMessage,
    LeadSyncedMessage,
    RedeliverLeadMessage,
    ConversionRequestedMessage,
    ConversionSentMessage,
    InsightsUpdatedMessage,
    CampaignCommandMessage,
    CommandResultMessage,
    AlertRaisedMessage,
    RuleConsentChangedMessage,
    RuleDecisionReviewedMessage,
)
