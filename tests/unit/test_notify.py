"""Notification channels against local fakes: a Slack incoming webhook (aiohttp) and an SMTP server (asyncio)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from pydantic import SecretStr

from contracts.alerts import AlertRaised
from services.rules_engine.notify import ChannelError, Notifier, raise_for_failed_channels, render_text
from services.rules_engine.settings import NotifySettings
from shared.messaging import PermanentError, RetryLater
from tests.fixtures.smtp import SmtpReceiver

ALERT = AlertRaised(severity="warning", code="rule_acted", service="rules_engine", subject="rule kill",
                    summary="Paused ad set 'Broad' because CPL over the last 3 days was $89.00 (> $50).")


@dataclass
class Hook:
    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    bodies: list[dict] = field(default_factory=list)


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    state = Hook()

    async def handler(request: web.Request) -> web.Response:
        state.bodies.append(await request.json())
        return web.Response(status=state.status, text="ok" if state.status == 200 else "no_service",
                            headers=state.headers)

    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}/hook"
    yield state
    await runner.cleanup()


def notifier(**overrides: object) -> Notifier:
    return Notifier(NotifySettings(**{"smtp_host": "", "slack_webhook_url": SecretStr(""), **overrides}))


async def test_slack_gets_the_sentence_as_json_text(hook: Hook) -> None:
    await notifier(slack_webhook_url=SecretStr(hook.url)).send("slack", ALERT)
    assert hook.bodies == [{"text": render_text(ALERT)}]
    assert hook.bodies[0]["text"].startswith("[warning] Paused ad set 'Broad'")


@pytest.mark.parametrize(("status", "permanent", "retry_after"), [(500, False, None), (404, True, None),
                                                                  (429, False, 7.0)])
async def test_slack_failures_are_classified(hook: Hook, status: int, permanent: bool,
                                             retry_after: float | None) -> None:
    hook.status = status
    hook.headers = {"Retry-After": "7"} if status == 429 else {}
    with pytest.raises(ChannelError) as caught:
        await notifier(slack_webhook_url=SecretStr(hook.url)).send("slack", ALERT)
    assert caught.value.permanent is permanent
    assert caught.value.retry_after == retry_after
    assert hook.url not in str(caught.value), "the webhook URL is a credential"


def test_failures_become_retry_park_or_delay() -> None:
    raise_for_failed_channels([])
    with pytest.raises(RuntimeError):
        raise_for_failed_channels([ChannelError("slack", "HTTP 500"), ChannelError("email", "auth", permanent=True)])
    with pytest.raises(PermanentError):
        raise_for_failed_channels([ChannelError("slack", "HTTP 404", permanent=True)])
    with pytest.raises(RetryLater) as later:
        raise_for_failed_channels([ChannelError("slack", "rate limited", retry_after=12)])
    assert later.value.delay == 12


def test_unconfigured_channels_are_skipped() -> None:
    assert notifier().configured(["log", "slack", "email"]) == ["log"]
    assert notifier(smtp_host="mail", slack_webhook_url=SecretStr("http://x")).configured(["slack", "email"]) == [
        "slack", "email"]


def test_settings_split_lists_and_hide_secrets() -> None:
    settings = NotifySettings(notify_email_to="a@example.com, b@example.com", smtp_password=SecretStr("hunter2"),
                              slack_webhook_url=SecretStr("https://hooks.slack.com/services/T/B/secret"))
    assert settings.notify_email_to == ["a@example.com", "b@example.com"]
    assert "hunter2" not in repr(settings)
    assert "secret" not in repr(settings)


async def test_log_channel_logs_the_sentence(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="services.rules_engine.notify"):
        await notifier().send("log", ALERT)
    assert [r.getMessage() for r in caplog.records] == [f"notification: {ALERT.summary}"]


async def test_email_is_sent_over_smtp_in_a_thread(smtp: SmtpReceiver) -> None:
    mailer = notifier(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none",
                      smtp_from="leadwire@example.com", notify_email_to="ops@example.com")
    await mailer.send("email", ALERT)
    assert smtp.commands[:4] == ["EHLO", "MAIL", "RCPT", "DATA"]
    assert "To: ops@example.com" in smtp.texts[0]
    assert "Paused ad set 'Broad'" in smtp.texts[0]


async def test_email_to_from_the_rule_overrides_the_default(smtp: SmtpReceiver) -> None:
    mailer = notifier(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_security="none",
                      notify_email_to="ops@example.com")
    await mailer.send("email", ALERT, email_to=["partner@example.com"])
    assert "To: partner@example.com" in smtp.texts[0]


async def test_unreachable_smtp_is_a_retryable_failure() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    mailer = notifier(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", notify_email_to="ops@example.com",
                      smtp_timeout_seconds=2)
    with pytest.raises(ChannelError) as caught:
        await mailer.send("email", ALERT)
    assert not caught.value.permanent
