"""The reports service: composition root.

Background job: the daily report, at REPORT_TIME (08:00) in each ad account's time zone, to Slack and e-mail
(SLACK_WEBHOOK_URL, SMTP_*). On demand: `leadwire report daily` (services/reports/cli.py). It reads the read
models (views) of the other services and writes only its own report_deliveries and report_snapshots.
"""

from __future__ import annotations

from services.reports import handlers
from services.reports.settings import ReportSettings
from services.reports.worker import Worker
from shared.service import Service
from shared.settings import CrmOutcomeSettings, NotifySettings, Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("reports", settings, uses_database=True)
    config = service.settings.block(ReportSettings)
    targets = service.settings.target_book()  # read now: a bad accounts file or target stops the start

    def dependencies(started: Service) -> Worker:
        return Worker(
            started.db, config, started.settings.block(NotifySettings), started.settings.block(CrmOutcomeSettings),
            started.settings.broker.amqp_url.get_secret_value(), targets,
        )

    handlers.register(service, service.on_started(dependencies), enabled=config.enabled)
    return service
