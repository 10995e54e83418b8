"""Notifications: the log always, a Slack incoming webhook, e-mail over SMTP.

Every notification is an `AlertRaised` (from any service, or from the rules engine for its own decisions) delivered
by the `alerts` consumer. Each channel that worked is recorded (`notification_deliveries`), so when one channel
fails the handler raises, the message is retried by the messaging machinery, and only the missing channels are
tried again. Alerts never carry lead PII or secrets (contracts/alerts.py); the Slack URL and SMTP password are
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage

import aiohttp

from contracts.alerts import AlertRaised
from services.rules_engine.settings import NotifySettings
from shared.messaging import PermanentError, RetryLater

logger = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("log", "slack", "email")
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class ChannelError(Exception):
    """A channel could not deliver; `retry_after` is set when the service said when to try again."""

    def __init__(self, channel: str, reason: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.permanent = permanent
        self.retry_after = retry_after


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
        url = self.settings.slack_webhook_url.get_secret_value()
        timeout = aiohttp.ClientTimeout(total=self.http_timeout)
        try:
            # One session per message: notifications are rare, and no session outlives the event loop.
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                url, json={"text": render_text(alert)}
            ) as resp:
                body = (await resp.text())[:200]
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ChannelError("slack", f"request failed: {type(exc).__name__}") from None
        if status == 200:
            return
        if status == 429:
            raise ChannelError("slack", "rate limited", retry_after=_seconds(retry_after, 30.0))
        # Slack answers 403/404/410 with invalid_token, no_service, channel_not_found...: the webhook URL is dead.
        permanent = status in (400, 403, 404, 410)
        raise ChannelError("slack", f"HTTP {status}: {body}", permanent=permanent)

    async def email(self, alert: AlertRaised, recipients: Sequence[str]) -> None:
        if not recipients:
            logger.warning("e-mail notification skipped: NOTIFY_EMAIL_TO is empty", extra={"alert_code": alert.code})
            return
        message = EmailMessage()
        message["Subject"] = f"[leadwire] {alert.severity}: {alert.summary[:120]}"
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(recipients)
        message.set_content(render_text(alert))
        try:
            await asyncio.to_thread(_send_mail, self.settings, message)
        except smtplib.SMTPAuthenticationError:
            raise ChannelError("email", "SMTP authentication failed (check SMTP_USERNAME/SMTP_PASSWORD)",
                               permanent=True) from None
        except smtplib.SMTPRecipientsRefused:
            raise ChannelError("email", "every recipient was refused (check NOTIFY_EMAIL_TO)", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelError("email", f"{type(exc).__name__}") from None


def _send_mail(settings: NotifySettings, message: EmailMessage) -> None:
    """Blocking: runs in a worker thread."""
    host, port, timeout = settings.smtp_host, settings.smtp_port, settings.smtp_timeout_seconds
    smtp: smtplib.SMTP
    if settings.smtp_security == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(1.0, float(value)) if value else default
    except ValueError:
        return default


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
