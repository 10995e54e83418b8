"""Poison messages: what no retry can fix, found as early as possible and parked alone.

A message is poison when decoding or preparing it fails for a reason in the message itself: invalid JSON or
contract (`ValidationError`), a validator that raised something else (`OverflowError` for `1e400` as a time),
values PostgreSQL cannot store or JSON cannot carry (NUL, lone surrogates, `Infinity`, `NaN`), or a malformed
internal header (`x-leadwire-attempt: "x"`). Both consumption paths (`shared.messaging.ReliableConsumer`,
`shared.bulk_consumer`) decode with `decode` and check headers with `check_headers`, and park what raises
`PoisonError` at once, with the reason, without touching the message's neighbours.

A write that fails for one bad item must not fail its whole batch: `isolate` splits the batch until the failing
items are alone (as capi_sender bisects Meta's rejections).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from shared.topology import H_ATTEMPT, H_NOT_BEFORE

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
R = TypeVar("R")

# Attempts beyond this are no counter of ours; a not-before further ahead than this is no delay of ours.
MAX_ATTEMPT_HEADER = 1_000_000
MAX_NOT_BEFORE_AHEAD_SECONDS = 7 * 24 * 3600.0


class PoisonError(Exception):
    """This message can never be handled as it is: park it at once with this reason (which holds no values)."""


class MalformedHeaderError(PoisonError):
    """An internal header (attempt, not-before) that is not what our retry machinery writes."""


def describe(exc: BaseException) -> str:
    """A reason for a parked message: field paths and messages, never the input (it may hold PII)."""
    if isinstance(exc, PoisonError):
        return str(exc)
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors(include_input=False, include_url=False)
        ]
        return f"invalid message ({exc.error_count()} errors): " + "; ".join(parts[:10])
    if isinstance(exc, UnicodeError):  # its str() quotes the text around the bad character
        return f"{type(exc).__name__}: text that cannot be encoded"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{type(exc).__name__} (sqlstate {exc.sqlstate})"  # its message may quote the value
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def is_poison(exc: BaseException) -> bool:
    """Whether `exc` says something about the data itself, so that retrying the same data cannot help.

    `OverflowError`, `UnicodeError`, pydantic's serialization errors, and PostgreSQL's data exceptions (class 22:
    NUL in text, a value out of range, ...) are; a connection error, a timeout or a 5xx are not.
    """
    return isinstance(
        exc,
        PoisonError | ValidationError | OverflowError | UnicodeError | PydanticSerializationError | asyncpg.DataError,
    )


# -- headers ----------------------------------------------------------------------------------------------------


def parse_attempt(value: object) -> int:
    """The attempt header as our machinery writes it (an integer >= 1, maybe as digits); raises otherwise."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ATTEMPT_HEADER:
        return value
    raise MalformedHeaderError(f"malformed header {H_ATTEMPT}: not an attempt count ({type(value).__name__})")


def parse_not_before(value: object, *, now: float | None = None) -> float:
    """The not-before header (unix seconds, as text or a number; empty = none) as a float; raises otherwise."""
    if value is None or value in ("", b""):
        return 0.0
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    seconds: float | None = None
    numeric = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and re.fullmatch(r"[0-9]{1,12}(\.[0-9]{1,9})?", value.strip())):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except OverflowError:
            seconds = None
    current = time.time() if now is None else now
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        raise MalformedHeaderError(f"malformed header {H_NOT_BEFORE}: not unix seconds ({type(value).__name__})")
    if seconds > current + MAX_NOT_BEFORE_AHEAD_SECONDS:
        raise MalformedHeaderError(f"malformed header {H_NOT_BEFORE}: more than 7 days ahead")
    return seconds


def check_headers(headers: Mapping[str, Any]) -> None:
    """Raise `MalformedHeaderError` if the attempt or not-before header is present and not ours."""
    if H_ATTEMPT in headers:
        parse_attempt(headers[H_ATTEMPT])
    if H_NOT_BEFORE in headers:
        parse_not_before(headers[H_NOT_BEFORE])


# -- bodies -----------------------------------------------------------------------------------------------------

# What a body must contain for a decoded value to be unstorable: a \\u escape (NUL; a lone surrogate). Non-finite
# numbers (`1e400`, `Infinity`, `NaN`) need no scan: every contract refuses them at validation (`contracts.values`).


def _suspect(body: bytes) -> bool:
    """Whether `body` may hold an unstorable value (one substring check; most bodies hold none)."""
    return b"\\u" in body


_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: object, path: str = "<root>") -> str | None:
    """Where in `value` (a model dump: dicts, lists, scalars) something no database column or JSON can hold is."""
    if isinstance(value, str):
        if _UNSTORABLE_CHAR.search(value):
            return f"{path}: NUL or lone surrogate in text"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{path}: not a finite number"
    elif isinstance(value, Decimal):
        if not value.is_finite():
            return f"{path}: not a finite number"
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _UNSTORABLE_CHAR.search(key):
                return f"{path}: NUL or lone surrogate in a key"
            found = unstorable(item, f"{path}.{key}" if path != "<root>" else str(key))
            if found:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = unstorable(item, f"{path}[{index}]")
            if found:
                return found
    return None


def decode(cls: type[M], body: bytes) -> M:
    """Validate `body` as `cls`; any failure, or a value that cannot be stored, raises `PoisonError`."""
    try:
        message = cls.model_validate_json(body)
    except Exception as exc:  # not only ValidationError: a validator may raise OverflowError, RecursionError, ...
        raise PoisonError(f"undecodable message: {describe(exc)}") from exc
    if _suspect(body):
        try:
            problem = unstorable(message.model_dump())
        except Exception as exc:
            raise PoisonError(f"undecodable message: {describe(exc)}") from exc
        if problem:
            raise PoisonError(f"unstorable value at {problem}")
    return message


# -- batches ----------------------------------------------------------------------------------------------------


async def isolate(
    items: Sequence[T], write: Callable[[Sequence[T]], Awaitable[R]]
) -> tuple[list[R], list[tuple[T, BaseException]]]:
    """Run `write` on all of `items`; when it fails for bad data (`is_poison`), split the items in halves and try
    each, until every failing item is alone. Returns the results of the writes that succeeded and each bad item
    with its error. Any other exception (the database is down) is raised: the whole batch retries.

    `write` must leave nothing behind when it raises (one statement, or one transaction).
    """
    if not items:
        return [], []
    try:
        return [await write(items)], []
    except Exception as exc:
        if not is_poison(exc):
            raise
        if len(items) == 1:
            return [], [(items[0], exc)]
    middle = len(items) // 2
    done_first, bad_first = await isolate(items[:middle], write)
    done_second, bad_second = await isolate(items[middle:], write)
    return done_first + done_second, bad_first + bad_second
