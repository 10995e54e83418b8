"""The daily report in three forms: plain text (the terminal and the e-mail's text alternative), Slack Block Kit
blocks, and an HTML e-mail with the chart as an inline PNG (a CID attachment: mail clients show it without
loading anything from the web). No lead personal data reaches any of them: a report is built from counts and
campaign, ad set and rule names only.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

from services.reports.logic import STUCK_LABELS, DailyReport, Numbers, Windows, change, count_change

# Slack's limits (api.slack.com/reference/block-kit): a message's blocks, a section's text, a header's text,
# a section's fields, a context's elements.
SLACK_MAX_BLOCKS = 50
SLACK_MAX_TEXT = 3000
SLACK_MAX_HEADER = 150
SLACK_MAX_FIELDS = 10
SLACK_MAX_FIELD_TEXT = 2000
SLACK_MAX_CONTEXT_ELEMENTS = 10
SLACK_CAMPAIGNS = 15  # campaigns listed by name in Slack; the rest summed in one line

# A cost against its account's target (shared/targets.py): the marks of the text and Slack forms, the e-mail's
# cell colours (the console's Performance page's).
TARGET_MARKS = {"ok": "✓", "warn": "▲", "bad": "▲▲"}
SLACK_TARGET_MARKS = {"ok": ":large_green_circle:", "warn": ":large_yellow_circle:", "bad": ":red_circle:"}
TARGET_STYLES = {"ok": "color:#027a48;background:#ecfdf3;font-weight:bold;",
                 "warn": "color:#b54708;background:#fffaeb;font-weight:bold;",
                 "bad": "color:#d92d20;background:#fef3f2;font-weight:bold;"}
TARGET_LABELS = (("cpl", "cost per lead"), ("per_qualified", "per qualified lead"), ("per_signed", "per signed case"))

OUTCOME_WORDS = {"acted": "acted", "would_act": "would act (shadow / dry run)", "skipped": "checked, no action"}


def _day(d: date) -> str:
    return d.strftime("%a %d %b %Y")


def _short(d: date) -> str:
    return d.strftime("%d %b")


@dataclass(frozen=True)
class Metric:
    label: str
    day: str
    day_change: str
    week: str
    week_change: str
    # Is a rise bad news (a cost)? Colours the change in the e-mail.
    rise_is_bad: bool = False
    # Against the account's target (ok, warn, bad; "" without one): costs only.
    day_state: str = ""
    week_state: str = ""


def metrics(report: DailyReport, numbers: Windows) -> list[Metric]:
    """The report's lines for one row (a campaign or the total), each for the day and the 7 days."""
    money = report.money

    def line(label: str, value: Callable[[Numbers], int | Decimal | None], as_money: bool,
             target: str = "") -> Metric:
        def fmt(v: int | Decimal | None) -> str:
            return money(v) if as_money else ("—" if v is None else f"{v:,}")

        def state(n: Numbers) -> str:
            cost = value(n)
            return report.judge(Decimal(cost), target) if target and cost is not None else ""

        return Metric(label, fmt(value(numbers.day)), change(value(numbers.day), value(numbers.day_before)),
                      fmt(value(numbers.week)), change(value(numbers.week), value(numbers.week_before)),
                      bool(target), state(numbers.day), state(numbers.week))

    return [
        line("Spend", lambda n: n.spend_minor, True),
        line("Leads (Meta)", lambda n: n.meta_leads, False),
        line("Cost per lead", lambda n: n.cpl, True, "cpl"),
        line("Leads received", lambda n: n.leads, False),
        line("Qualified leads", lambda n: n.qualified, False),
        line("Cost per qualified lead", lambda n: n.cost_per_qualified, True, "per_qualified"),
        line("Signed cases", lambda n: n.signed, False),
        line("Cost per signed case", lambda n: n.cost_per_signed, True, "per_signed"),
    ]


def marked(value: str, state: str, marks: dict[str, str] = TARGET_MARKS) -> str:
    """`$66.67 ▲`: a cost with its mark against the target (unchanged without one)."""
    return f"{value} {marks[state]}" if state else value


def targets_line(report: DailyReport) -> str:
    """What the costs are judged against, and what the marks mean; "" when nothing is judged."""
    shown = report.targets.shown(report.currency)
    if not report.targets:
        return f"Costs not judged: {report.unjudged}" if report.unjudged else ""
    listed = " · ".join(f"{label} {shown[key]}" for key, label in TARGET_LABELS if shown[key])
    return f"Targets: {listed} (✓ at or under, ▲ up to 25% over, ▲▲ more)"


def title(report: DailyReport) -> str:
    return f"Daily report {_day(report.day)} · {report.account_name}"


def _with_change(value: str, delta: str) -> str:
    return f"{value} ({delta})" if delta else value


def _leads(n: int) -> str:
    return f"{n:,} lead" if n == 1 else f"{n:,} leads"


def _campaign_line(report: DailyReport, numbers: Windows,
                   marks: dict[str, str] = TARGET_MARKS) -> tuple[str, str]:
    d, w = numbers.day, numbers.week

    def cost(value: Decimal | None, target: str) -> str:
        return marked(report.money(value), report.judge(value, target), marks)

    day = (f"{report.money(d.spend_minor)} · {_leads(d.meta_leads)} · CPL "
           f"{_with_change(cost(d.cpl, 'cpl'), change(d.cpl, numbers.day_before.cpl))}")
    week = (f"{report.money(w.spend_minor)} · {_leads(w.meta_leads)} · CPL "
            f"{_with_change(cost(w.cpl, 'cpl'), change(w.cpl, numbers.week_before.cpl))} · "
            f"{w.qualified} qualified ({cost(w.cost_per_qualified, 'per_qualified')} each) · "
            f"{w.signed} signed ({cost(w.cost_per_signed, 'per_signed')} each)")
    return day, week


def _rules_lines(report: DailyReport) -> list[str]:
    rules = report.rules
    lines = [", ".join(
        f"{OUTCOME_WORDS[k]}: {rules.day.get(k, 0)}"
        + (f" ({count_change(rules.day.get(k, 0), rules.day_before.get(k, 0))})"
           if count_change(rules.day.get(k, 0), rules.day_before.get(k, 0)) else "")
        for k in ("acted", "would_act", "skipped")
    ) + " (rule × object pairs; change from the day before)"]
    for item in rules.items:
        times = f" ×{item.times}" if item.times > 1 else ""
        lines.append(f"- {item.rule} on {item.entity_level} '{item.entity_name}': "
                     f"{OUTCOME_WORDS.get(item.outcome, item.outcome)}{times}. {item.explanation}")
    if rules.more:
        lines.append(f"- and {rules.more} more")
    return lines


def _stuck_lines(report: DailyReport) -> list[str]:
    stuck = report.stuck
    lines = []
    for key, label in STUCK_LABELS.items():
        value = stuck.counts.get(key)
        shown = "unknown (RabbitMQ not reachable)" if value is None else str(value)
        delta = count_change(value, stuck.previous.get(key) if stuck.previous else None)
        lines.append(f"{label}: {shown}" + (f" ({delta} since the last report)" if delta and delta != "=" else ""))
    for queue, n in sorted(stuck.parked_by_queue.items(), key=lambda kv: -kv[1]):
        if n:
            lines.append(f"  parked in {queue}: {n}")
    for kind, subject, detail in stuck.alerts:
        what = "rule stopped by its circuit breaker" if kind == "rule_breaker" else "lead access lost on Page"
        lines.append(f"Open: {what} {subject}" + (f": {detail}" if detail else ""))
    return lines


def problems(report: DailyReport) -> int:
    """How many things need an operator (for the subject line)."""
    counts = report.stuck.counts
    return sum(int(counts.get(k) or 0) for k in ("parked", "crm_failed", "capi_rejected_24h", "lead_alerts_24h",
                                                  "outbox_backlog", "open_breakers"))


# ------------------------------------------------------------------------------------------------ text


def text(report: DailyReport) -> str:
    """The report as plain text: what `leadwire report daily` prints and the e-mail's text alternative."""
    out = [title(report), f"Ad account {report.account_id} · days in {report.zone} · {report.currency}", ""]
    header = f"{'':26}{_day(report.day)[:10]:>14}{'vs day before':>15}  {'7 days to it':>14}{'vs 7 days before':>18}"
    out.append(header)
    for m in metrics(report, report.total):
        day, week = marked(m.day, m.day_state), marked(m.week, m.week_state)
        out.append(f"{m.label:26}{day:>14}{m.day_change:>15}  {week:>14}{m.week_change:>18}")
    for label, o in (("Organic leads (no ad)", report.organic), ("Test leads", report.test)):
        out.append(f"{label:26}{o.day.leads:>14,}{change(o.day.leads, o.day_before.leads):>15}  "
                   f"{o.week.leads:>14,}{change(o.week.leads, o.week_before.leads):>18}")
    if judged := targets_line(report):
        out.append(judged)
    out.append("")
    out.append(f"Per campaign ({_short(report.day)} | 7 days {_short(report.week_first)}–{_short(report.day)}; "
               "qualified and signed by the lead's date)")
    if not report.rows:
        out.append("  no campaign spent or brought a lead")
    for row in report.rows:
        day, week = _campaign_line(report, row.numbers)
        out += [f"  {row.name}", f"    day:    {day}", f"    7 days: {week}"]
    out += ["", "What the rules did", *[f"  {line}" for line in _rules_lines(report)]]
    out += ["", "Stuck or broken", *[f"  {line}" for line in _stuck_lines(report)]]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------ slack


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _mrkdwn(value: str) -> str:
    """Slack mrkdwn escapes only these three (api.slack.com/reference/surfaces/formatting#escaping)."""
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _section(value: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(value, SLACK_MAX_TEXT)}}


def slack(report: DailyReport) -> dict[str, Any]:
    """The incoming-webhook payload: Block Kit blocks within Slack's limits, and `text` for notifications."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title(report), SLACK_MAX_HEADER)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _mrkdwn(
            f"Ad account {report.account_id} · days in {report.zone} · changes are from the day before")}]},
    ]
    for label, pick, when in (("Yesterday", "day", _day(report.day)),
                              ("Last 7 days", "week", f"{_short(report.week_first)} – {_short(report.day)}")):
        fields = []
        for m in metrics(report, report.total):
            value, delta = ((marked(m.day, m.day_state, SLACK_TARGET_MARKS), m.day_change) if pick == "day"
                            else (marked(m.week, m.week_state, SLACK_TARGET_MARKS), m.week_change))
            fields.append({"type": "mrkdwn", "text": _clip(f"*{m.label}*\n{_with_change(value, delta)}",
                                                            SLACK_MAX_FIELD_TEXT)})
        blocks.append(_section(f"*{label}* · {when}"))
        # A section takes 10 fields at most.
        for i in range(0, len(fields), SLACK_MAX_FIELDS):
            blocks.append({"type": "section", "fields": fields[i:i + SLACK_MAX_FIELDS]})
    o, t = report.organic, report.test
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"Leads without an ad (not in Meta's counts): {o.day.leads} organic and {t.day.leads} test yesterday, "
        f"{o.week.leads} organic and {t.week.leads} test in 7 days")}]})
    if judged := targets_line(report):
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(_mrkdwn(judged).replace(
            "✓", SLACK_TARGET_MARKS["ok"]).replace("▲▲", SLACK_TARGET_MARKS["bad"]).replace(
            "▲", SLACK_TARGET_MARKS["warn"]), SLACK_MAX_TEXT)}]})
    blocks.append({"type": "divider"})
    blocks.append(_section("*Per campaign* (yesterday | 7 days; qualified and signed by the lead's date)"))
    for row in report.rows[:SLACK_CAMPAIGNS]:
        day, week = _campaign_line(report, row.numbers, SLACK_TARGET_MARKS)
        blocks.append(_section(f"*{_mrkdwn(row.name)}*\nYesterday: {day}\n7 days: {week}"))
    if len(report.rows) > SLACK_CAMPAIGNS:
        rest = report.rows[SLACK_CAMPAIGNS:]
        spend = sum(r.numbers.week.spend_minor for r in rest)
        blocks.append(_section(f"…and {len(rest)} more campaigns: {report.money(spend)} over 7 days"))
    if not report.rows:
        blocks.append(_section("No campaign spent or brought a lead."))
    blocks.append({"type": "divider"})
    blocks.append(_section("*What the rules did*\n" + "\n".join(_mrkdwn(line) for line in _rules_lines(report))))
    blocks.append(_section("*Stuck or broken*\n" + "\n".join(_mrkdwn(line) for line in _stuck_lines(report))))
    assert len(blocks) <= SLACK_MAX_BLOCKS, "the layout above has a fixed number of blocks"
    summary = report.total.day
    return {
        "text": _clip(f"{title(report)}: {report.money(summary.spend_minor)} spent, {summary.meta_leads} leads, "
                      f"CPL {report.money(summary.cpl)}", SLACK_MAX_TEXT),
        "blocks": blocks,
    }


# ------------------------------------------------------------------------------------------------ e-mail

_CELL = "padding:4px 8px;border-bottom:1px solid #e5e7eb;font-size:14px;"
_NUM = _CELL + "text-align:right;white-space:nowrap;"


def _change_cell(delta: str, rise_is_bad: bool) -> str:
    colour = "#6b7280"
    if delta.startswith("+"):
        colour = "#b91c1c" if rise_is_bad else "#15803d"
    elif delta.startswith("−"):
        colour = "#15803d" if rise_is_bad else "#b91c1c"
    return f'<td style="{_NUM}color:{colour};">{html.escape(delta)}</td>'


def _cell(value: str, state: str = "") -> str:
    """A number's cell; a cost against its target is coloured as on the console's Performance page."""
    return f'<td style="{_NUM}{TARGET_STYLES.get(state, "")}">{html.escape(value)}</td>'


def _campaign_row(report: DailyReport, name: str, n: Windows) -> str:
    money, judge = report.money, report.judge
    cells = [_cell(money(n.day.spend_minor)), _cell(str(n.day.meta_leads)),
             _cell(money(n.day.cpl), judge(n.day.cpl, "cpl"))]
    after = [_cell(money(n.week.spend_minor)), _cell(str(n.week.meta_leads)),
             _cell(money(n.week.cpl), judge(n.week.cpl, "cpl")), _cell(str(n.week.qualified)),
             _cell(money(n.week.cost_per_qualified), judge(n.week.cost_per_qualified, "per_qualified")),
             _cell(str(n.week.signed)),
             _cell(money(n.week.cost_per_signed), judge(n.week.cost_per_signed, "per_signed"))]
    return (f'<tr><td style="{_CELL}">{html.escape(name)}</td>' + "".join(cells)
            + _change_cell(change(n.day.cpl, n.day_before.cpl), True) + "".join(after) + "</tr>")


def email_html(report: DailyReport, chart_cid: str | None) -> str:
    """Table layout with inline styles only: what Gmail, Outlook and Apple Mail all render the same."""
    e = html.escape
    rows = "".join(
        f'<tr><td style="{_CELL}">{e(m.label)}</td>{_cell(m.day, m.day_state)}'
        f"{_change_cell(m.day_change, m.rise_is_bad)}{_cell(m.week, m.week_state)}"
        f"{_change_cell(m.week_change, m.rise_is_bad)}</tr>"
        for m in metrics(report, report.total)
    )
    for label, o in (("Organic leads (no ad)", report.organic), ("Test leads", report.test)):
        rows += (f'<tr><td style="{_CELL}color:#6b7280;">{label}</td>'
                 f'<td style="{_NUM}">{o.day.leads}</td>{_change_cell(change(o.day.leads, o.day_before.leads), False)}'
                 f'<td style="{_NUM}">{o.week.leads}</td>'
                 f"{_change_cell(change(o.week.leads, o.week_before.leads), False)}</tr>")
    head = (f'<tr><th style="{_CELL}text-align:left;"></th><th style="{_NUM}">{e(_day(report.day))}</th>'
            f'<th style="{_NUM}">vs day before</th><th style="{_NUM}">7 days</th>'
            f'<th style="{_NUM}">vs 7 days before</th></tr>')
    campaigns = "".join(_campaign_row(report, r.name, r.numbers) for r in report.rows) or (
        f'<tr><td style="{_CELL}" colspan="12">No campaign spent or brought a lead.</td></tr>')
    campaign_head = "".join(f'<th style="{_NUM}">{e(h)}</th>' for h in (
        "Spend", "Leads", "CPL", "vs day before", "Spend 7 d", "Leads 7 d", "CPL 7 d", "Qualified", "per qualified",
        "Signed", "per signed"))
    chart = (f'<p><img src="cid:{e(chart_cid)}" width="600" height="240" alt="Daily spend (bars) and cost per lead '
             f'(line), 14 days" style="display:block;border:0;max-width:100%;height:auto;"></p>'
             if chart_cid else "")
    rules = "".join(f"<li>{e(line.removeprefix('- '))}</li>" for line in _rules_lines(report)[1:])
    judged = (f'<p style="margin:6px 0 0;color:#6b7280;font-size:13px;" data-targets>{e(targets_line(report))}</p>'
              if targets_line(report) else "")
    stuck = "".join(f"<li>{e(line.strip())}</li>" for line in _stuck_lines(report))
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{e(title(report))}</title></head>
<body style="margin:0;padding:16px;background:#ffffff;color:#111827;font-family:Arial,Helvetica,sans-serif;">
<h1 style="font-size:20px;margin:0 0 4px;">{e(title(report))}</h1>
<p style="margin:0 0 12px;color:#6b7280;font-size:13px;">Ad account {e(report.account_id)} · days in {e(report.zone)}
 · changes are from the day before · qualified and signed leads are counted by the lead's date</p>
{chart}
<table role="presentation" cellpadding="0" cellspacing="0" style="border-collapse:collapse;">{head}{rows}</table>
{judged}<h2 style="font-size:16px;margin:20px 0 6px;">Per campaign</h2>
<table role="presentation" cellpadding="0" cellspacing="0" style="border-collapse:collapse;">
<tr><th style="{_CELL}text-align:left;">Campaign</th>{campaign_head}</tr>{campaigns}</table>
<h2 style="font-size:16px;margin:20px 0 6px;">What the rules did</h2>
<p style="margin:0;font-size:14px;">{e(_rules_lines(report)[0])}</p><ul style="font-size:14px;">{rules}</ul>
<h2 style="font-size:16px;margin:20px 0 6px;">Stuck or broken</h2><ul style="font-size:14px;">{stuck}</ul>
</body></html>
"""


def email(report: DailyReport, *, sender: str, recipients: list[str], chart_png: bytes | None) -> EmailMessage:
    """multipart/alternative: text/plain, then multipart/related (text/html + the chart as image/png by CID)."""
    message = EmailMessage()
    count = problems(report)
    flag = f" · {count} problem{'s' if count != 1 else ''}" if count else ""
    message["Subject"] = f"[leadwire] {title(report)}{flag}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(text(report))
    cid = make_msgid(domain="leadwire.report") if chart_png else None
    message.add_alternative(email_html(report, cid[1:-1] if cid else None), subtype="html")
    if chart_png and cid:
        html_part = message.get_payload()[1]  # type: ignore[index]
        html_part.add_related(chart_png, "image", "png", cid=cid, filename="daily-chart.png")
    return message
