"""Configuration failures name the variable; secrets never reach the logs of a real run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from shared.settings import MetaSettings, Settings, SettingsError
from tests.fixtures.infra import AMQP_URL, TEST_DSN

SECRET_TOKEN = "EAAGm0PX4ZCpsBAsecret-token-value-42"
SECRET_APP = "app-secret-0123456789abcdef"


def test_malformed_setting_names_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("META_AD_ACCOUNT_ID", "123456")
    with pytest.raises(SettingsError, match=r"^invalid setting META_AD_ACCOUNT_ID: .*act_") as caught:
        _ = Settings().meta
    assert "123456" not in str(caught.value)


def test_secrets_absent_from_reprs() -> None:
    meta = MetaSettings(access_token=SECRET_TOKEN, app_secret=SECRET_APP)
    assert SECRET_TOKEN not in repr(meta)
    assert SECRET_APP not in repr(meta)
    assert SECRET_TOKEN not in str(meta.model_dump())


async def _run_cli(*args: str, env: dict[str, str], stop_when: str | None = None) -> tuple[int, str]:
    """Run `leadwire ARGS`; with `stop_when`, send SIGTERM once that text was printed. Returns (code, output)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while line := (await process.stdout.readline()).decode():
            lines.append(line)
            if stop_when is not None and stop_when in line:
                process.send_signal(signal.SIGTERM)
        await process.wait()
    return process.returncode or 0, "".join(lines)


def _env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("META_", "AMQP", "DATABASE"))}
    return {**keep, "AMQP_URL": AMQP_URL, "DATABASE_URL": TEST_DSN, "LOG_FORMAT": "json", **extra}


async def test_missing_or_bad_setting_stops_the_service_with_one_line() -> None:
    code, output = await _run_cli("run", "lead_fetcher", env=_env(RETRY_ATTEMPTS="many"))
    assert code == 2
    assert output.strip().splitlines() == [
        "leadwire: invalid setting RETRY_ATTEMPTS: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


async def test_a_bad_worker_count_stops_before_any_worker_starts() -> None:
    code, output = await _run_cli("run", "capi_sender", env=_env(CAPI_WORKERS="0"))
    assert code == 2
    assert output.strip().splitlines() == [
        "leadwire: invalid setting CAPI_WORKERS: Input should be greater than or equal to 1"
    ]


@pytest.mark.parametrize(
    ("amqp_url", "says"),
    [
        (AMQP_URL.rsplit("/", 1)[0] + "/no_such_vhost_for_leadwire", "does vhost 'no_such_vhost_for_leadwire' exist"),
        ("amqp://guest:guest@127.0.0.1:1/", "Connection refused"),
    ],
    ids=["wrong-vhost", "unreachable"],
)
async def test_a_broker_refusing_or_unreachable_at_start_is_one_line(amqp_url: str, says: str) -> None:
    code, output = await _run_cli("run", "ingress", env=_env(AMQP_URL=amqp_url, OPS_PORT="0", INGRESS_PORT="0",
                                                              LOG_LEVEL="INFO"))
    assert code == 1
    assert "Traceback" not in output
    problems = [line for line in output.splitlines() if '"level": "error"' in line or "cannot start" in line]
    assert len(problems) == 1, output
    assert problems[0].startswith("leadwire: cannot start: ")
    assert says in problems[0]
    assert "guest:guest" not in output


async def test_secrets_set_in_environment_never_logged(database_dsn: str) -> None:
    env = _env(
        META_ACCESS_TOKEN=SECRET_TOKEN,
        META_APP_SECRET=SECRET_APP,
        META_WEBHOOK_VERIFY_TOKEN="verify-secret-xyz",
        LOG_LEVEL="DEBUG",
        OPS_PORT="0",
    )
    code, output = await _run_cli("run", "lead_fetcher", env=env, stop_when="lead_fetcher started")
    assert code == 0, output
    assert "lead_fetcher stopped" in output
    for secret in (SECRET_TOKEN, SECRET_APP, "verify-secret-xyz", "guest:guest"):
        assert secret not in output
