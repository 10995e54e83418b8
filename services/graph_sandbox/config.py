"""Sandbox configuration (constructed explicitly by tests, from the CLI by `__main__`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxConfig:
    """Start-up settings; everything behavioural can be changed later through `/_sandbox/*`.

    Args:
        app_id: the app id reported by `debug_token`.
        app_secret: used to verify `appsecret_proof` when a caller sends one, and as the default webhook
            signing secret.
        seed: default seed for the deterministic account.
        ads: number of seeded ads in the main USD account (default ~20 => 3 campaigns, 8 ad sets).
        days: days of seeded insights history (ending today in the account's timezone).
        latest_version: the current Marketing API version (named in errors about unversioned or retired calls).
        oldest_version: the oldest Marketing API version still served; older ones fail with #2635.
        public_url: base URL used in paging `next` links when it cannot be derived from the request.
        now: the clock at start and after each reset: `HH:MM` (today, in the main account's time zone) or an
            ISO 8601 instant; None = the machine's time. It ticks from there (see `clock.py`).
    """

    app_id: str = "1234567890123456"
    app_secret: str = "sandbox-app-secret"  # noqa: S105 - a fake secret for a fake API
    seed: int = 42
    ads: int = 20
    days: int = 30
    latest_version: str = "v26.0"
    oldest_version: str = "v25.0"
    public_url: str | None = None
    call_log_size: int = 20_000
    now: str | None = None
