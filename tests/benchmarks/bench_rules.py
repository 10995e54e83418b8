"""Benchmark: 10 rules over 10,000 ad sets with 30 days of insights, and the shipped default rules with and without
their ad-level rule over the same ad sets with 3 ads each.

Run: ``python -m tests.benchmarks.bench_rules [--adsets N] [--days D] [--ads A] [--repeat R]``. Prints the wall and CPU
time per full evaluation (goal < 1 s; CPU time is the steadier figure on a shared machine) and the peak memory of
one evaluation (tracemalloc), for plausible lead-gen data ("typical") and for data where most rules match most ad
sets ("stress", the worst case for explanations). Each is measured on two inputs: one row per ad set and day
("raw rows") and the rows the service actually passes ("segment rows": delivery summed per ad set and window
segment, as `store.load_snapshot` does in SQL, plus per-day CRM rows in no particular order).

"shipped defaults" loads `default_rules/` as the service does (`load_rules`, enabled rules only) and evaluates it on
the rows `load_snapshot` would read for it: with an ad-level rule enabled (`refresh-reminder`) that is every ad's
entity and one row per ad and segment (ads roll up to their ad sets), without it ad-set entities and rows only. Ads
get Meta's deduplicated 7-day reach (as the poller stores it), which the ad-level frequency rule reads.
`bench_rules_snapshot` measures loading the same data from PostgreSQL.

`evaluate` pauses the cyclic garbage collector while it runs; "deferred gc" is the time of a full collection right
after a run, an upper bound on the collection work it leaves for later (the snapshot's rows are most of it).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from bisect import bisect_right
from collections import Counter
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.rules_engine.logic import evaluate
from services.rules_engine.model import Decision, EngineSettings, EngineState, Entity, MetricRow, Snapshot
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import DEFAULT_RULES_DIR, Rule
from services.rules_engine.snapshot import levels_of, lookback_days, segments

NOW = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


def _rule(name: str, conditions: list[dict], actions: list, min_data: list | None = None, **extra) -> Rule:
    return Rule.model_validate(
        {
            "name": name,
            "scope": {"level": "adset"},
            "min_data": min_data or [],
            "conditions": {"all": conditions},
            "actions": actions,
            **extra,
        }
    )


def make_rules() -> list[Rule]:
    """Ten rules: the guide's four plus six that exercise other metrics, windows and metric-vs-metric."""
    imp3 = [{"metric": "impressions", "window": "last_3_days", "op": ">", "value": 1000}]
    return [
        _rule("kill", [{"metric": "cpl", "window": "last_3_days", "op": ">", "value": 50}], ["pause"], imp3),
        _rule(
            "scale",
            [{"metric": "cpl", "window": "last_3_days", "op": "<", "value": 25}],
            [{"type": "change_budget", "percent": 20}],
            [{"metric": "leads", "window": "last_3_days", "op": ">", "value": 5}],
        ),
        _rule("freq", [{"metric": "frequency", "window": "last_7_days", "op": ">", "value": 4}], ["pause"]),
        _rule(
            "protect",
            [
                {"metric": "spend", "window": "today", "op": ">", "value": 300},
                {"metric": "leads", "window": "today", "op": "==", "value": 0},
            ],
            ["pause", {"type": "notify", "channels": ["log", "slack"]}],
        ),
        _rule(
            "overspend",
            [
                {
                    "metric": "spend",
                    "window": "last_7_days",
                    "op": ">",
                    "compare_to": {"metric": "daily_budget", "factor": 8},
                }
            ],
            [{"type": "notify"}],
        ),
        _rule("ctr", [{"metric": "ctr", "window": "last_7_days", "op": "<", "value": 0.3}], [{"type": "notify"}], imp3),
        _rule("cpm", [{"metric": "cpm", "window": "last_14_days", "op": ">", "value": 60}], [{"type": "notify"}]),
        _rule(
            "cpql",
            [{"metric": "cost_per_qualified_lead", "window": "last_30_days", "op": ">", "value": 150}],
            [{"type": "change_budget", "percent": -15}],
        ),
        _rule(
            "cpsc",
            [{"metric": "cost_per_signed_case", "window": "lifetime", "op": ">", "value": 2000}],
            [{"type": "notify"}],
        ),
        _rule(
            "stop-loss",
            [{"metric": "spend", "window": "yesterday", "op": ">", "value": 400}],
            ["pause_for_today"],
            dry_run=True,
        ),
    ]


def _poisson(rng: random.Random, mean: float) -> int:
    """Small-mean Poisson sample (Knuth); good enough for daily lead counts."""
    if mean > 30:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _split(total: int, weights: list[float]) -> list[int]:
    """``total`` in whole parts proportional to ``weights`` (which sum to 1); the last part takes the rest."""
    parts = [int(total * w) for w in weights[:-1]]
    return [*parts, total - sum(parts)]


def make_snapshot(
    adsets: int,
    days: int,
    *,
    stress: bool = False,
    seed: int = 7,
    ads_per_adset: int = 0,
    reach_windows: tuple[str, ...] = (),
) -> Snapshot:
    """Ad sets with plausible lead-gen delivery (median CPL ~$40, $10-$60 daily budgets); ``stress`` makes
    spend large and random so that most rules match most ad sets (worst case for explanations).

    With ``ads_per_adset``, each ad set has that many ads and the rows are per ad and day (as `insights_daily`): each
    day's delivery of the ad set split between its ads in fixed uneven shares, so the ad sets' sums are the same as
    without ads. ``reach_windows`` adds Meta's deduplicated reach of every entity over those windows, as the Graph
    sandbox answers it (summed daily reach / (1 + 0.15 x (days with delivery - 1))).
    """
    rng = random.Random(seed)
    shares = random.Random(seed + 1)  # its own stream: the ad sets' numbers do not depend on ``ads_per_adset``
    today = date(2026, 11, 20)
    entities = []
    rows = []
    for i in range(adsets):
        adset_id = f"as{i}"
        campaign_id = f"c{i // 20}"
        budget = rng.choice([1000, 2000, 3000, 4000, 6000]) if not stress else rng.choice([5000, 10000, 30000])
        entity = Entity(
            id=adset_id,
            level="adset",
            name=f"Ad set {i}",
            status="ACTIVE",
            account_id=f"act_{i % 5}",
            campaign_id=campaign_id,
            campaign_name=f"Campaign {i // 20}",
            daily_budget=budget,
            timezone="America/New_York",
        )
        entities.append(entity)
        ads = [f"ad{i}_{k}" for k in range(ads_per_adset)]
        entities.extend(
            replace(entity, id=ad_id, level="ad", name=f"Ad {i}.{k}", adset_id=adset_id, daily_budget=None)
            for k, ad_id in enumerate(ads)
        )
        weights = [shares.lognormvariate(0, 0.6) for _ in ads]
        weights = [w / sum(weights) for w in weights]
        cpl = 4000 * rng.lognormvariate(0, 0.5)  # minor units
        cpm = rng.uniform(1500, 4000)
        ctr = rng.uniform(0.004, 0.02)
        daily_frequency = rng.uniform(1.05, 1.8)
        for d in range(days):
            if stress:
                spend = rng.randint(0, 35000)
                impressions = rng.randint(0, 3000)
                leads = rng.randint(0, 6)
            else:
                spend = round(budget * rng.uniform(0.6, 1.05))
                impressions = round(spend / cpm * 1000)
                leads = _poisson(rng, spend / cpl)
            qualified = sum(rng.random() < 0.4 for _ in range(leads))
            row = MetricRow(
                date=today - timedelta(days=d),
                adset_id=adset_id,
                campaign_id=campaign_id,
                spend=spend,
                impressions=impressions,
                reach=max(1, round(impressions / daily_frequency)),
                clicks=round(impressions * ctr),
                leads=leads,
                qualified_leads=qualified,
                signed_cases=sum(rng.random() < 0.25 for _ in range(qualified)),
            )
            if not ads:
                rows.append(row)
                continue
            split = [_split(value, weights) for value in row[4:]]
            rows.extend(
                row._replace(ad_id=ad_id, **dict(zip(row._fields[4:], column, strict=True)))
                for ad_id, *column in zip(ads, *split, strict=True)
            )
    snapshot = Snapshot(entities=entities, rows=rows)
    if reach_windows:
        snapshot = replace(snapshot, window_reach=deduplicated_reach(snapshot, reach_windows, today))
    return snapshot


def deduplicated_reach(snapshot: Snapshot, windows: tuple[str, ...], today: date) -> dict[tuple[str, str], int]:
    """``{(entity id, window): reach}`` as the Graph sandbox deduplicates it over a range (and the poller stores it,
    `stored_window_reach`), for every entity with delivery in the window."""
    out: dict[tuple[str, str], int] = {}
    for window in windows:
        lo, hi = window_bounds(window)
        first, last = today - timedelta(days=hi if hi is not None else 10**4), today - timedelta(days=lo)
        reach: Counter[str] = Counter()
        delivered: dict[str, set[date]] = {}
        for row in snapshot.rows:
            if first <= row.date <= last and row.impressions:
                for key in (row.ad_id, row.adset_id):
                    if key is not None:
                        reach[key] += row.reach
                        delivered.setdefault(key, set()).add(row.date)
        for key, days in delivered.items():
            out[(key, window)] = max(1, round(reach[key] / (1 + 0.15 * (len(days) - 1))))
    return out


def segment_snapshot(snapshot: Snapshot, rules: list[Rule], now: datetime, *, lookback_cap: int = 35) -> Snapshot:
    """The snapshot `store.load_snapshot` would read for ``snapshot``'s daily rows: the entities of the rules'
    levels; delivery summed per ad set (per ad when a rule is at ad level) and window segment, dated at the segment's
    newest day and ordered by ad set and date (an ad set's ads interleaved, as the SQL leaves them), followed by one
    CRM row per ad set (or ad) and day with qualified leads or signed cases, in no particular order; the window
    reach of the entities loaded."""
    bounds = segments(rules, lookback_days(rules, lookback_cap) + 1)
    levels = levels_of(rules)
    per_ad = "ad" in levels
    entities = [e for e in snapshot.entities if e.level in levels]
    zone_of = {e.id: e.timezone for e in snapshot.entities if e.level == "adset"}
    today_in: dict[str, date] = {}
    Key = tuple[str | None, str, str | None, date]
    delivery: dict[Key, list[int]] = {}
    crm: dict[Key, list[int]] = {}
    for row in snapshot.rows:
        assert row.adset_id is not None
        tz_name = zone_of[row.adset_id]
        today = today_in.get(tz_name) or today_in.setdefault(tz_name, now.astimezone(ZoneInfo(tz_name)).date())
        offset = (today - row.date).days
        if offset < 0:
            continue
        ad_id = row.ad_id if per_ad else None
        day = today - timedelta(days=bounds[bisect_right(bounds, offset) - 1])
        sums = delivery.setdefault((ad_id, row.adset_id, row.campaign_id, day), [0] * 5)
        for i, value in enumerate((row.spend, row.impressions, row.reach, row.clicks, row.leads)):
            sums[i] += value
        if row.qualified_leads or row.signed_cases:
            outcomes = crm.setdefault((ad_id, row.adset_id, row.campaign_id, row.date), [0, 0])
            outcomes[0] += row.qualified_leads
            outcomes[1] += row.signed_cases
    rows = [
        MetricRow(day, ad_id, adset_id, campaign_id, *sums)
        for (ad_id, adset_id, campaign_id, day), sums in sorted(delivery.items(), key=lambda kv: (kv[0][1], kv[0][3]))
    ]
    extra = [
        MetricRow(day, ad_id, adset_id, campaign_id, qualified_leads=q, signed_cases=s)
        for (ad_id, adset_id, campaign_id, day), (q, s) in crm.items()
    ]
    random.Random(11).shuffle(extra)
    loaded = {e.id for e in entities}
    reach = {key: value for key, value in snapshot.window_reach.items() if key[0] in loaded}
    return Snapshot(entities=entities, rows=[*rows, *extra], window_reach=reach)


def _run(label: str, rules: list[Rule], snapshot: Snapshot, repeat: int) -> tuple[list[tuple], float]:
    """Evaluate ``repeat`` times and print the figures; the decisions (as tuples) and the median CPU time."""
    state = EngineState(data_as_of={str(i): NOW for i in range(5)})
    settings = EngineSettings()
    timings = []
    cpu = []
    deferred = []
    decisions = []
    for _ in range(repeat):
        gc.collect()
        start, start_cpu = time.perf_counter(), time.process_time()
        decisions = evaluate(rules, snapshot, state, NOW, settings)
        timings.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        start_gc = time.perf_counter()
        gc.collect()
        deferred.append(time.perf_counter() - start_gc)
    outcomes = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    tracemalloc.start()
    evaluate(rules, snapshot, state, NOW, settings)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"[{label}] evaluate: median {statistics.median(timings):.3f} s, best {min(timings):.3f} s, "
        f"worst {max(timings):.3f} s over {repeat} runs (goal < 1 s); CPU median {statistics.median(cpu):.3f} s, "
        f"best {min(cpu):.3f} s; peak memory (tracemalloc) {peak / 2**20:.1f} MiB; "
        f"deferred gc median {statistics.median(deferred):.3f} s"
    )
    print(f"[{label}] decisions: {len(decisions)} {dict(sorted(outcomes.items()))}")
    return comparable(decisions), statistics.median(cpu)


def comparable(decisions: list[Decision]) -> list[tuple]:
    """What two evaluations of the same data must agree on (command ids are new in each)."""
    return [(d.rule, d.entity_id, d.outcome, d.reason, d.metrics, d.explanation) for d in decisions]


def shipped_rules() -> tuple[list[Rule], list[Rule]]:
    """The shipped default rules as the service runs them (enabled ones), and the same without the ad-level ones."""
    shipped = [r for r in load_rules(DEFAULT_RULES_DIR) if r.enabled]
    return shipped, [r for r in shipped if r.scope.level != "ad"]


def shipped_snapshot(adsets: int, days: int, ads_per_adset: int) -> Snapshot:
    """Daily rows per ad, with the deduplicated reach the poller stores (INSIGHTS_REACH_WINDOWS' defaults)."""
    return make_snapshot(adsets, days, ads_per_adset=ads_per_adset, reach_windows=REACH_WINDOWS)


REACH_WINDOWS = ("last_3_days", "last_7_days", "previous_7_days")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adsets", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ads", type=int, default=3, help="ads per ad set in the shipped-defaults cases")
    parser.add_argument("--only", choices=["ten", "shipped"], help="only the ten rules' cases or the shipped ones")
    args = parser.parse_args(argv)

    if args.only != "shipped":
        rules = make_rules()
        for label, stress in (("typical", False), ("stress", True)):
            snapshot = make_snapshot(args.adsets, args.days, stress=stress)
            segmented = segment_snapshot(snapshot, rules, NOW)
            print(f"[{label}] rules={len(rules)} adsets={args.adsets} raw rows={len(snapshot.rows)}")
            raw, _ = _run(f"{label}, raw rows", rules, snapshot, args.repeat)
            print(f"[{label}] segment rows={len(segmented.rows)}")
            by_segment, _ = _run(f"{label}, segment rows", rules, segmented, args.repeat)
            print(f"[{label}] segment rows give the same decisions as raw rows: {by_segment == raw}")
            del snapshot, segmented, raw, by_segment
    if args.only != "ten":
        shipped, without_ad = shipped_rules()
        daily = shipped_snapshot(args.adsets, args.days, args.ads)
        results = {}
        for label, rules in (("shipped defaults", shipped), ("shipped defaults without ad-level rules", without_ad)):
            segmented = segment_snapshot(daily, rules, NOW)
            levels = Counter(e.level for e in segmented.entities)
            print(
                f"[{label}] rules={len(rules)} ({', '.join(r.name for r in rules)}) entities={dict(levels)} "
                f"segment rows={len(segmented.rows)} window reach={len(segmented.window_reach)}"
            )
            results[label] = _run(label, rules, segmented, args.repeat)
            del segmented
        (with_ad, cpu_with), (without, cpu_without) = results.values()
        ad_rules = {r.name for r in shipped if r.scope.level == "ad"}
        print(
            f"[shipped defaults] the ad-level rules ({', '.join(sorted(ad_rules))}) cost "
            f"{cpu_with - cpu_without:+.3f} s CPU ({cpu_with / cpu_without:.1f}x); the ad sets' decisions are the "
            f"same with and without them: {[d for d in with_ad if d[0] not in ad_rules] == without}"
        )
        print(
            f"[shipped defaults] goal < 1 s per full evaluation (CPU median {cpu_with:.3f} s): "
            f"{'met' if cpu_with < 1 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
