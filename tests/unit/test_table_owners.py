"""Tables have owners (services/README.md "Tables have owners"): a table's name appears in the SQL of its owner
only; every other service reads it through the owner's views (`stored_*`, `console_*`, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# table -> the package whose code may name it in SQL (as in the README's table; `shared` for outbox and dedupe).
OWNERS = {
    "leads": "lead_fetcher", "lead_form_watermarks": "lead_fetcher", "lead_alerts": "lead_fetcher",
    "crm_deliveries": "crm_sync", "ghl_contacts": "crm_sync",
    "capi_events": "capi_sender",
    **dict.fromkeys(
        ("ad_accounts", "campaigns", "adsets", "ads", "insights_daily", "insights_window_reach"), "insights_poller"
    ),
    **dict.fromkeys(
        ("campaign_commands", "first_seen_budgets", "meta_budget_blocks", "audiences", "audience_members"),
        "campaign_executor",
    ),
    **dict.fromkeys(
        ("rule_crm_outcomes", "rule_runs", "rule_decisions", "rule_actions", "rule_breakers", "rule_notifications",
         "notification_deliveries", "rule_consent", "rule_consent_log", "rule_decision_reviews", "incident_alerts"),
        "rules_engine",
    ),
    "report_deliveries": "reports", "report_snapshots": "reports",
    "console_sessions": "console", "console_audit": "console",
    "outbox": "shared", "processed_messages": "shared",
}

# Known exceptions, named in the README: lead_fetcher's hot lookups ask in the same query whether a lead's
# LeadCaptured is in the outbox already (a read; writes go through shared/outbox.py).
ALLOWED = {("lead_fetcher", "outbox")}

# A table named where SQL names one: after from / join / into / update (a docstring saying "from ads" would count too;
# none does).
_SQL_TABLE = re.compile(r"\b(?:from|join|into|update)\s+([a-z_]+)\b", re.IGNORECASE)


def _packages() -> list[tuple[str, Path]]:
    services = sorted(p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
    return [(p.name, p) for p in services] + [("shared", ROOT / "shared")]


def test_every_table_of_the_migrations_has_an_owner() -> None:
    created = set()
    for migration in (ROOT / "shared/db/migrations").glob("*.sql"):
        created |= set(re.findall(r"create table (?:if not exists )?([a-z_]+)", migration.read_text(), re.I))
    assert created - {"schema_migrations"} <= set(OWNERS), sorted(created - set(OWNERS))


@pytest.mark.parametrize(("package", "path"), _packages(), ids=[name for name, _ in _packages()])
def test_a_package_names_only_the_tables_it_owns(package: str, path: Path) -> None:
    foreign = sorted(
        f"{source.relative_to(ROOT)}: {table}"
        for source in path.rglob("*.py")
        for table in {m.lower() for m in _SQL_TABLE.findall(source.read_text())}
        if OWNERS.get(table, package) != package and (package, table) not in ALLOWED
    )
    assert not foreign, "read another service's table (use its view): " + ", ".join(foreign)
