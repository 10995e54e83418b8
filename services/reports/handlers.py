"""The daily report's entry point: the scheduled send (a background job). Thin: the work is
`worker.Worker`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.reports.worker import Worker
    from shared.service import Service, Started


def register(service: Service, reports: Started[Worker], *, enabled: bool) -> None:
    """Add the daily send (REPORT_ENABLED): every REPORT_CHECK_SECONDS, send the reports that are due."""

    async def send_daily_reports() -> None:
        await reports().run_forever()

    if enabled:
        service.background("daily_report", send_daily_reports)
