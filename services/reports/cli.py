"""`leadwire report daily [--date D] [--account A]`: make the daily report now, print it, and send it to the
configured channels (Slack, e-mail) unless `--no-send`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

from services.reports import chart, render
from services.reports.settings import ReportSettings
from services.reports.worker import NoAccountError, Worker
from shared.db.pool import create_pool
from shared.settings import CrmOutcomeSettings, NotifySettings, Settings


def register(subparsers: Any) -> None:
    report = subparsers.add_parser("report", help="reports to the operators").add_subparsers(
        dest="report_command", required=True)
    daily = report.add_parser("daily", help="the daily report: print it, and send it to Slack / e-mail")
    daily.add_argument("--date", type=date.fromisoformat, default=None,
                       help="the day reported on, YYYY-MM-DD (default: yesterday in the account's time zone)")
    daily.add_argument("--account", default=None, help="act_<id> (default: every ad account)")
    daily.add_argument("--no-send", action="store_true", help="only print it")
    daily.add_argument("--save-to", type=Path, default=None,
                       help="also write the e-mail (.eml, .html), its chart (.png) and the Slack payload (.json) here")
    daily.set_defaults(func=_cmd_daily)


def _cmd_daily(args: argparse.Namespace) -> int:
    return asyncio.run(daily(Settings(), args.account, args.date, send=not args.no_send, save_to=args.save_to))


async def daily(settings: Settings, account: str | None, day: date | None, *, send: bool = True,
                save_to: Path | None = None) -> int:
    pool = await create_pool(settings.database)
    try:
        reports = Worker(pool, settings.block(ReportSettings), settings.block(NotifySettings),
                               settings.block(CrmOutcomeSettings), settings.broker.amqp_url.get_secret_value(),
                               settings.target_book())
        try:
            built = await reports.build(account, day)
        except NoAccountError:
            sys.stderr.write(f"leadwire: no ad account {account or ''} stored yet: run the insights poller first "
                             "(`leadwire insights refresh --since YYYY-MM-DD`)\n")
            return 2
        channels = reports.channels() if send else []
        failed = False
        for report in built:
            sys.stdout.write(render.text(report) + "\n")
            if save_to is not None:
                save(report, save_to, reports)
            for channel, error in (await reports.send_all(report, channels)).items():
                if error is None:
                    sys.stderr.write(f"sent to {channel}\n")
                else:
                    failed = True
                    sys.stderr.write(f"leadwire: not sent: {error}\n")
        if send and not channels:
            sys.stderr.write("not sent: no channel configured (SLACK_WEBHOOK_URL; SMTP_HOST and NOTIFY_EMAIL_TO or "
                             "REPORT_EMAIL_TO)\n")
        return 1 if failed else 0
    finally:
        await pool.close()


def save(report: Any, folder: Path, reports: Worker) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"daily-{report.account_id}-{report.day.isoformat()}"
    png = chart.render(report.series, report.currency)
    stem.with_suffix(".png").write_bytes(png)
    message = render.email(report, sender=reports.notify.smtp_from, recipients=reports.recipients() or
                           ["operators@example.com"], chart_png=png)
    stem.with_suffix(".eml").write_bytes(bytes(message))
    # The HTML alone, with the chart beside it instead of by CID, to open in a browser.
    stem.with_suffix(".html").write_text(
        render.email_html(report, None).replace("<table", f'<p><img src="{stem.name}.png" width="600"></p><table', 1),
        encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps(render.slack(report), indent=2), encoding="utf-8")
