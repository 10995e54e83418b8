"""The sandbox's clock: the machine's time unless a test or the demo sets `now`.

Everything in the sandbox that depends on time (the account's "today", how much of today has been delivered,
lead `created_time`, job and audience timestamps) reads this clock, so a test can run the whole simulated world
at any hour of the day: `POST /_sandbox/clock {"now": "23:30"}` (a time of day in the main account's time zone,
today) or an ISO 8601 instant. A set clock keeps ticking from there, unless `frozen`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo


def parse_now(text: str, tz: ZoneInfo, *, wall: float | None = None) -> float:
    """`HH:MM` (today, in `tz`) or an ISO 8601 instant with an offset -> seconds since the epoch."""
    text = text.strip()
    try:
        at = dtime.fromisoformat(text)
    except ValueError:
        pass
    else:
        if at.tzinfo is not None:
            raise ValueError(f"clock: a time of day is read in the account's time zone, without an offset: {text!r}")
        today = datetime.fromtimestamp(time.time() if wall is None else wall, tz).date()
        return datetime.combine(today, at, tz).timestamp()
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"clock: now must be HH:MM or an ISO 8601 instant, not {text!r}") from None
    if instant.tzinfo is None:
        raise ValueError(f"clock: an instant needs its UTC offset (e.g. 2026-12-03T09:00:00+00:00): {text!r}")
    return instant.timestamp()


class Clock:
    def __init__(self) -> None:
        self._offset = 0.0
        self._frozen_at: float | None = None

    def time(self) -> float:
        """Seconds since the epoch, as the sandbox sees them."""
        return self._frozen_at if self._frozen_at is not None else time.time() + self._offset

    def set(self, now: float | None, *, frozen: bool = False) -> None:
        """Move the clock to `now` (None: back to the machine's time), ticking from there unless `frozen`."""
        wall = time.time()
        target = wall if now is None else now
        self._offset = target - wall
        self._frozen_at = target if frozen else None

    def describe(self) -> dict[str, Any]:
        now = self.time()
        return {
            "now": datetime.fromtimestamp(now, UTC).isoformat(),
            "epoch": now,
            "offset_seconds": round(now - time.time(), 3),
            "frozen": self._frozen_at is not None,
        }
