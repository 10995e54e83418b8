"""Benchmark: creative rotation at ad level, 20,000 ads in 5,000 ad sets with 15 days of insights.

Run: ``python -m tests.benchmarks.bench_rotation [--adsets N] [--repeat R]``. Each ad set has three active ads and
one paused ``[reserve]`` ad; about a third of the active ads are fatigued (7-day frequency over 3.5 on their window
reach). Prints the CPU time per evaluation of the same conditions with the action ``rotate_creative`` and with a
plain ``pause``: the difference is what looking up and booking the reserves costs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from services.rules_engine.logic import evaluate
from services.rules_engine.model import EngineSettings, EngineState, Entity, MetricRow, Snapshot
from services.rules_engine.rules import Rule
from tests.unit.test_rules_rotation import ROTATE

NOW = datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


def rule(action: str) -> Rule:
    """The unit tests' rotation rule (frequency over 3.5 on 7 days, or CTR fallen below 70 %) with ``action``."""
    return Rule.model_validate({**ROTATE, "name": f"rotate-{action}", "actions": [action],
                                "guardrails": {"max_actions_per_run": 100_000, "max_actions_per_day": 100_000}})


def world(adsets: int, seed: int = 7) -> Snapshot:
    rng = random.Random(seed)
    entities: list[Entity] = []
    rows: list[MetricRow] = []
    reach: dict[tuple[str, str], int] = {}
    today = NOW.date()
    for s in range(adsets):
        adset = str(10_000_000 + s)
        for k in range(3):
            ad = str(20_000_000 + s * 4 + k)
            entities.append(Entity(id=ad, level="ad", name=f"Ad {k}", status="ACTIVE", account_id="act_1",
                                   adset_id=adset, campaign_id="1", timezone="UTC"))
            impressions = rng.randint(500, 2_000)
            for d in range(15):
                rows.append(MetricRow(today - timedelta(days=d), ad, adset, "1", spend=rng.randint(500, 3_000),
                                      impressions=impressions, reach=impressions // 2, clicks=impressions // 100))
            fatigued = rng.random() < 0.33
            reach[(ad, "last_7_days")] = impressions * 7 // (5 if fatigued else 2)
        reserve = str(20_000_000 + s * 4 + 3)
        entities.append(Entity(id=reserve, level="ad", name="[reserve] 1 video", status="PAUSED", account_id="act_1",
                               adset_id=adset, campaign_id="1", timezone="UTC"))
    rows.sort(key=lambda r: (r.adset_id, r.date))
    return Snapshot(entities=entities, rows=rows, window_reach=reach)


def cpu_per_run(rules: list[Rule], snapshot: Snapshot, state: EngineState, repeat: int) -> tuple[float, Counter[str]]:
    times = []
    outcomes: Counter[str] = Counter()
    for _ in range(repeat):
        start = time.process_time()
        decisions = evaluate(rules, snapshot, state, NOW, EngineSettings(max_actions_per_run=1_000_000))
        times.append(time.process_time() - start)
        outcomes = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    return statistics.median(times), outcomes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adsets", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    snapshot = world(args.adsets)
    state = EngineState(data_as_of={"1": NOW}, consented=None)
    print(f"[rotation] ads={len(snapshot.entities)} adsets={args.adsets} rows={len(snapshot.rows)}")
    for action in ("pause", "rotate_creative"):
        cpu, outcomes = cpu_per_run([rule(action)], snapshot, state, args.repeat)
        print(f"[rotation] {action}: CPU {cpu:.3f} s per evaluation (median of {args.repeat}); "
              f"{dict(sorted(outcomes.items()))}")


if __name__ == "__main__":
    main()
