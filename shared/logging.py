"""One place that configures logging: JSON lines when not a TTY, with the current correlation id.

Defence in depth for secrets: every configured secret value (tokens, app secret, passwords in URLs) is
registered with `register_secret` and masked in any formatted record, whatever code logged it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
_secrets: set[str] = set()

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
MASK = "***"


def register_secret(value: str | None) -> None:
    """Mask this value in every log line from now on (ignored when too short to be a real secret)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class correlation_scope:  # a class, not @contextmanager: cheaper once per message
    """`with correlation_scope(cid):` log records inside carry `correlation_id` (a falsy id clears it)."""

    __slots__ = ("_token", "_value")

    def __init__(self, correlation_id: object) -> None:
        self._value = str(correlation_id) if correlation_id else None

    def __enter__(self) -> None:
        self._token = _correlation_id.set(self._value)

    def __exit__(self, *exc: object) -> None:
        _correlation_id.reset(self._token)


def current_correlation_id() -> str | None:
    return _correlation_id.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (cid := _correlation_id.get()) is not None:
            entry["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if (cid := _correlation_id.get()) is not None:
            line += f" [cid={cid}]"
        return redact(line)


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Install one stderr handler on the root logger (replacing earlier ones of ours)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.set_name("leadwire")
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "leadwire":
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log repeats request lines (with query strings) for every webhook, and the AMQP drivers log
    # raw message bodies (which may hold lead PII) at DEBUG: keep all three at WARNING whatever LOG_LEVEL says.
    for noisy in ("aiohttp.access", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
