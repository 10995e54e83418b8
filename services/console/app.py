"""The operator's console: composition root. Server-rendered pages on CONSOLE_PORT (localhost by default).

Pages read the `console_*` views (migrations 0020, 0060) through `queries`; the console writes only its own
sessions and audit rows, and sends the rules engine messages (Automation page) through the outbox. /healthz /readyz
/metrics are served on the same port.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from aiohttp import web

from contracts.messages import RuleConsentChangedMessage, RuleDecisionReviewedMessage
from services.console import automation, handlers, logic, meta_health, stuck
from services.console.keys import CONTEXT, ConsoleContext
from services.console.meta_health import MetaHealth
from services.console.parked import ParkedCounts
from services.console.security import LoginLimiter
from services.console.settings import ConsoleSettings
from shared.service import Port, Service
from shared.settings import CrmOutcomeSettings, Settings

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), autoescape=True, enable_async=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=logic.duration, status_label=logic.STATUS_LABELS.get,
                       delivery_label=logic.DELIVERY_LABELS.get, capi_label=logic.CAPI_LABELS.get)

    def local(value: object, zone: object, fmt: str = "%a %d %b, %H:%M") -> str:
        from datetime import datetime

        return value.astimezone(zone).strftime(fmt) if isinstance(value, datetime) else "—"  # type: ignore[arg-type]

    env.filters["local"] = local
    return env


def create_app(settings: Settings | None = None) -> Service:
    settings = settings or Settings()
    config = settings.block(ConsoleSettings)
    # The health strip's Meta chips need a Graph client; CONSOLE_META_CHECK_SECONDS=0 leaves it (and them) out.
    service = Service("console", settings, uses_database=True, uses_graph=config.meta_check_seconds > 0)
    outcomes = service.settings.block(CrmOutcomeSettings)
    service.web_host = config.host
    service.port = Port(config.port, "CONSOLE_PORT")  # its pages and the ops routes on one port
    context = ConsoleContext(
        settings=config,
        templates=templates(),
        limiter=LoginLimiter(config.login_attempts, config.login_window_seconds),
        pool=lambda: service.db,
        qualified_events=list(outcomes.qualified_events),
        signed_events=list(outcomes.signed_events),
        parked=ParkedCounts(),
        amqp_url=service.settings.broker.amqp_url.get_secret_value(),
        targets=service.settings.target_book(),
        meta=MetaHealth() if config.meta_check_seconds > 0 else None,
    )
    if context.meta is not None:
        meta_state = context.meta

        async def check_meta() -> None:
            await meta_health.run_forever(meta_state, lambda: service.graph_client, service.settings.meta,
                                          config.meta_check_seconds)

        service.background("meta_health", check_meta)

    def build_web_app() -> web.Application:
        app = web.Application(middlewares=[handlers.security_headers, handlers.require_login],
                              client_max_size=64 * 1024)
        app[CONTEXT] = context
        app.router.add_get("/login", handlers.login_form, name="login_form")
        app.router.add_post("/login", handlers.login, name="login")
        app.router.add_post("/logout", handlers.logout, name="logout")
        app.router.add_get("/", handlers.today_page, name="today")
        app.router.add_get("/today/tiles", handlers.today_tiles, name="today_tiles")
        app.router.add_get("/leads", handlers.leads_page, name="leads")
        app.router.add_get("/leads/{leadgen_id:[0-9A-Za-z_-]{1,64}}", handlers.lead_page, name="lead")
        app.router.add_post("/leads/{leadgen_id:[0-9A-Za-z_-]{1,64}}/reveal", handlers.reveal_lead, name="reveal")
        app.router.add_get("/performance", handlers.performance_page, name="performance")
        automation.add_routes(app)
        stuck.add_routes(app)
        app.router.add_static("/static/", STATIC_DIR, name="static")
        return app

    service.web_app = build_web_app
    # The Automation page's requests to the rules engine leave through the outbox.
    service.publisher(RuleConsentChangedMessage, "An operator enabled a rule or put it back in shadow mode.")
    service.publisher(RuleDecisionReviewedMessage, "An operator approved or rejected a shadow decision.")
    service.relay_outbox()
    return service
