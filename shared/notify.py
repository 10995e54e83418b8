"""Sending to the operators: a Slack incoming webhook (any JSON payload: text or Block Kit blocks) and e-mail over
SMTP, with `NotifySettings`. Used by the rules engine's alerts and the daily report (services/reports).

Failures become a `ChannelError` that says whether retrying can help (`permanent`) and when Slack asked to be
tried again (`retry_after`). The Slack URL and the SMTP password are credentials: never in an error or a log.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Any

import aiohttp

from shared.settings import NotifySettings


class ChannelError(Exception):
    """A channel could not deliver; `retry_after` is set when the service said when to try again."""

    def __init__(self, channel: str, reason: str, *, permanent: bool = False, retry_after: float | None = None):
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.permanent = permanent
        self.retry_after = retry_after


async def post_slack(settings: NotifySettings, payload: dict[str, Any], *, http_timeout: float = 10.0) -> None:
    """POST one message to the incoming webhook; raises `ChannelError` unless Slack answered 200."""
    url = settings.slack_webhook_url.get_secret_value()
    try:
        # One session per message: notifications are rare, and no session outlives the event loop.
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=http_timeout)) as session, session.post(
            url, json=payload
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
    # 400 is invalid_payload / invalid_blocks: the same message will never pass.
    permanent = status in (400, 403, 404, 410)
    raise ChannelError("slack", f"HTTP {status}: {body}", permanent=permanent)


async def send_email(settings: NotifySettings, message: EmailMessage) -> None:
    """Send a built message (From/To/Subject set by the caller) through the SMTP relay, off the event loop."""
    try:
        await asyncio.to_thread(send_mail_blocking, settings, message)
    except smtplib.SMTPAuthenticationError:
        raise ChannelError("email", "SMTP authentication failed (check SMTP_USERNAME/SMTP_PASSWORD)",
                           permanent=True) from None
    except smtplib.SMTPRecipientsRefused:
        raise ChannelError("email", "every recipient was refused (check NOTIFY_EMAIL_TO)", permanent=True) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise ChannelError("email", f"{type(exc).__name__}") from None


def send_mail_blocking(settings: NotifySettings, message: EmailMessage) -> None:
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
