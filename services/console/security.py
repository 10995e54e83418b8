"""Logins, sessions, CSRF tokens and the headers every console response carries.

Passwords are argon2id hashes from settings; the session cookie holds a random token whose SHA-256 is the
`console_sessions` key (a stolen database does not yield live cookies). Each session has its CSRF token, which
every POST form carries; the login form, before any session, uses a double-submit cookie instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

if TYPE_CHECKING:
    import asyncpg

SESSION_COOKIE = "lw_session"
LOGIN_CSRF_COOKIE = "lw_login_csrf"

# Scripts and styles from the console's own /static only: no inline code, no other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_hasher = PasswordHasher()
# Verified when the user name is unknown, so an unknown name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(accounts: dict[str, str], username: str, password: str) -> bool:
    """True if `username` is an operator and `password` matches their hash (constant work either way)."""
    hashed = accounts.get(username)
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    username: str
    csrf_token: str


async def open_session(pool: asyncpg.Pool, username: str, hours: float) -> str:
    """Store a new session for `username`; returns the cookie's token."""
    token = new_token()
    await pool.execute(
        "insert into console_sessions (token_sha256, username, csrf_token, expires_at) values ($1, $2, $3, $4)",
        _digest(token), username, new_token(), datetime.now(UTC) + timedelta(hours=hours),
    )
    await pool.execute("delete from console_sessions where expires_at < now()")
    return token


async def find_session(pool: asyncpg.Pool, token: str | None, accounts: dict[str, str]) -> Session | None:
    """The live session of a cookie token; None if unknown, expired, or its operator was removed from settings."""
    if not token:
        return None
    row = await pool.fetchrow(
        "select username, csrf_token from console_sessions where token_sha256 = $1 and expires_at > now()",
        _digest(token),
    )
    if row is None or row["username"] not in accounts:
        return None
    return Session(row["username"], row["csrf_token"])


async def close_session(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute("delete from console_sessions where token_sha256 = $1", _digest(token))


async def audit(pool: asyncpg.Pool, username: str, action: str, subject: str | None = None) -> None:
    await pool.execute("insert into console_audit (username, action, subject) values ($1, $2, $3)",
                       username, action, subject)


class LoginLimiter:
    """Failed logins per key (client address, user name) within a sliding window; in memory, per process."""

    def __init__(self, attempts: int, window_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.attempts = attempts
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(key)) >= self.attempts for key in keys)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
