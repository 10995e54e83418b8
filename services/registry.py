"""Every service of this repository, as the `leadwire` command knows it: name, factory, ops port, subcommands.

With `services/__main__.py`, the only module allowed to import more than one service (the import contracts in
pyproject.toml enforce it). A new service adds one line here. Ops ports under `leadwire run`: OPS_PORT_BASE +
offset (8081-8086 and 8088 by default); the ingress serves on INGRESS_PORT.
"""

from __future__ import annotations

from services.campaign_executor import app as campaign_executor
from services.campaign_executor import cli as campaign_executor_cli
from services.capi_sender import app as capi_sender
from services.capi_sender import cli as capi_sender_cli
from services.console import app as console
from services.console import cli as console_cli
from services.crm_sync import app as crm_sync
from services.crm_sync import cli as crm_sync_cli
from services.ingress import app as ingress
from services.insights_poller import app as insights_poller
from services.insights_poller import cli as insights_poller_cli
from services.lead_fetcher import app as lead_fetcher
from services.lead_fetcher import cli as lead_fetcher_cli
from services.reports import app as reports
from services.reports import cli as reports_cli
from services.rules_engine import app as rules_engine
from services.rules_engine import cli as rules_engine_cli
from shared.service import ServiceSpec

SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingress", ingress.create_app, workers=ingress.workers),
    ServiceSpec("lead_fetcher", lead_fetcher.create_app, ops_port_offset=0, register_cli=lead_fetcher_cli.register),
    ServiceSpec("crm_sync", crm_sync.create_app, ops_port_offset=1, register_cli=crm_sync_cli.register),
    ServiceSpec(
        "capi_sender", capi_sender.create_app, ops_port_offset=2, register_cli=capi_sender_cli.register,
        workers=capi_sender.workers,
    ),
    ServiceSpec(
        "insights_poller", insights_poller.create_app, ops_port_offset=3, register_cli=insights_poller_cli.register
    ),
    ServiceSpec("rules_engine", rules_engine.create_app, ops_port_offset=4, register_cli=rules_engine_cli.register),
    ServiceSpec(
        "campaign_executor", campaign_executor.create_app, ops_port_offset=5,
        register_cli=campaign_executor_cli.register,
    ),
    ServiceSpec("console", console.create_app, register_cli=console_cli.register),  # on CONSOLE_PORT
    # Offset 6 would be 8087, the console's CONSOLE_PORT: the daily report takes 7 (8088).
    ServiceSpec("reports", reports.create_app, ops_port_offset=7, register_cli=reports_cli.register),
)
