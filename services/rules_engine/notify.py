"""Notifications: the log always, a Slack incoming webhook, e-mail over SMTP.

Every notification is an `AlertRaised` (from any service, or from the rules engine for its own decisions) delivered
by the `alerts` consumer. Each channel that worked is recorded (`notification_deliveries`), so when one channel
fails the handler raises, the message is retried by the messaging machinery, and only the missing channels are
tried again. Alerts never carry lead PII or secrets (contracts/alerts.py); the Slack URL and SMTP password are
never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from contracts.alerts import AlertRaised
from services.rules_engine.settings import NotifySettings
from shared.messaging import PermanentError, RetryLater
from shared.notify import ChannelError, post_slack, send_email

__all__ = ["CHANNELS", "ChannelError", "Notifier", "raise_for_failed_channels", "render_text"]

logger = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("log", "slack", "email")
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def render_text(alert: AlertRaised) -> str:
    """One message body for Slack and e-mail: the sentence, then what it is about and how to fix it."""
    lines = [f"[{alert.severity}] {alert.summary}"]
    if alert.subject:
        lines.append(f"About: {alert.subject}")
    if alert.fix:
        lines.append(f"Fix: {alert.fix}")
    lines.append(f"({alert.code}, from {alert.service})")
    return "\n".join(lines)


@dataclass
class Notifier:
    """Sends one alert to the channels asked for; channels without settings are skipped (logged once per call)."""

    settings: NotifySettings
    http_timeout: float = 10.0

    def configured(self, channels: Sequence[str]) -> list[str]:
        out = []
        for channel in channels:
            if channel == "slack" and not self.settings.slack_enabled:
                continue
            if channel == "email" and not self.settings.email_enabled:
                continue
            out.append(channel)
        return out

    async def send(self, channel: str, alert: AlertRaised, *, email_to: Sequence[str] = ()) -> None:
        if channel == "log":
            self.log(alert)
        elif channel == "slack":
            await self.slack(alert)
        elif channel == "email":
            await self.email(alert, email_to or self.settings.notify_email_to)
        else:
            raise ValueError(f"unknown channel {channel!r}")

    def log(self, alert: AlertRaised) -> None:
        logger.log(
            _LOG_LEVELS.get(alert.severity, logging.WARNING), "notification: %s", alert.summary,
            extra={"alert_code": alert.code, "alert_service": alert.service, "subject": alert.subject},
        )

    async def slack(self, alert: AlertRaised) -> None:
        await post_slack(self.settings, {"text": render_text(alert)}, http_timeout=self.http_timeout)

    async def email(self, alert: AlertRaised, recipients: Sequence[str]) -> None:
        if not recipients:
            logger.warning("e-mail notification skipped: NOTIFY_EMAIL_TO is empty", extra={"alert_code": alert.code})
            return
        message = EmailMessage()
        message["Subject"] = f"[leadwire] {alert.severity}: {alert.summary[:120]}"
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(recipients)
        message.set_content(render_text(alert))
        await send_email(self.settings, message)


def raise_for_failed_channels(errors: Sequence[ChannelError]) -> None:
    """After every channel was tried: hand the failure to the messaging machinery (retry, or park if hopeless)."""
    if not errors:
        return
    reason = "; ".join(str(e) for e in errors)
    if all(e.permanent for e in errors):
        raise PermanentError(f"notification not deliverable: {reason}")
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    if waits and len(waits) == len(errors):
        raise RetryLater(f"notification throttled: {reason}", delay=max(waits))
    raise RuntimeError(f"notification failed: {reason}")
