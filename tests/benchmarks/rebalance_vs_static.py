"""Budget rebalancing (issue 20) vs static budgets on the decision-quality simulator (docs/decision-quality.md).

    python -m tests.benchmarks.rebalance_vs_static [SEEDS=200] [BUDGETS=7000,30000]

Not a `bench_*` module (`make bench` does not run it): it runs the simulator without changing it, through a
subclass of its account, because the simulator (another piece of work in progress) models neither a
`rebalance_budgets` command nor `stored_budget_limits`:
* `execute` applies a rebalance's moves as the single budget changes they are, decreases first, each through the
  simulator's model of the executor's checks (a refused decrease stops the increases, as in the executor);
* `_decide` gives the engine the executor's hard limits (first-seen budgets, increases of the week) as the service
  reads them from `stored_budget_limits`; without them the engine plans raises the executor refuses.
Targets are chosen on 20 training seeds (1,000,000+), then scored on held-out seeds 0..N-1 against static budgets
(paired, bootstrap 95 % interval; cost per signed case, spend on days 1-60 / signed cases counted through day 90).
Fold it into the simulator's policies once that work lands.

2026-12-03, 200 held-out seeds (about 35 s of CPU a budget), cost per signed case vs static budgets:
* $7k a month:  rebalance on cost per qualified lead (target $150, chosen) -1.5 % [-2.7, -0.3]; the shipped
  example ($180) -0.7 % [-1.7, +0.4]; rebalance on CPL (target $70, chosen) +0.7 % [-1.2, +2.7]; spend 100 %.
* $30k a month: CPQL ($220, chosen) -4.1 % [-5.0, -3.3]; the shipped example ($180) -3.2 % [-4.1, -2.4]; CPL ($70)
  -0.2 % [-1.3, +0.9]; spend 100 %, no move refused by the executor.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

from contracts.commands import RebalanceBudgetsCommand
from services.rules_engine.messages import to_command
from services.rules_engine.model import Action, BudgetLimit
from services.rules_engine.rules import Rule
from tests.benchmarks.sim import account as A
from tests.benchmarks.sim import world
from tests.benchmarks.sim.params import SimParams
from tests.benchmarks.sim.score import cost_per_signed, paired, resamples


class RebalancingAccount(A.Account):
    def _decide(self, day: int) -> list[tuple[Action, bool]]:
        """The simulator's decision, with the executor's hard limits known to the engine."""
        week_ago = day - 7
        self.state = replace(self.state, budget_limits={
            a.entity_id: BudgetLimit(first_seen=a.first_seen,
                                     increases_week=sum(1 for d in a.increases if d > week_ago))
            for a in self.adsets})
        original = A.EngineState

        def keep_limits(**kw: Any) -> A.EngineState:
            return original(budget_limits=self.state.budget_limits, **kw)

        A.EngineState = keep_limits  # type: ignore[misc,assignment]
        try:
            return super()._decide(day)
        finally:
            A.EngineState = original  # type: ignore[misc]

    def execute(self, action: Action, day: int) -> bool:
        if action.kind != "rebalance":
            return super().execute(action, day)
        message = to_command(action)
        command = message.payload.root
        assert isinstance(command, RebalanceBudgetsCommand)
        assert sum(m.from_minor for m in command.moves) == sum(m.to_minor for m in command.moves)
        cuts = [m for m in command.moves if m.to_minor < m.from_minor]
        ups = [m for m in command.moves if m.to_minor > m.from_minor]
        ok = True
        for m in [*cuts, *ups]:
            single = action.model_copy(update={"kind": "set_budget", "entity_id": m.object_id,
                                               "entity_level": "adset", "budget_field": "daily_budget",
                                               "budget": m.to_minor, "previous_budget": m.from_minor,
                                               "moves": (), "moves_level": None})
            if not super().execute(single, day):
                ok = False
                if m in cuts:
                    break  # a failed decrease: no increase
        return ok


def rebalance_rule(metric: str, target: float, window: str = "last_14_days", min_events: int = 3,
                   prior: float = 3, deadband: float = 10) -> Rule:
    return Rule.model_validate({
        "name": f"rebalance-{metric}-{target:g}", "scope": {"level": "adset", "status": ["ACTIVE"]},
        "conditions": {"all": [{"metric": "spend", "window": window, "op": ">", "value": 0}]},
        "actions": [{"type": "rebalance", "metric": metric, "target": target, "window": window,
                     "min_events": min_events, "prior_events": prior, "deadband_pct": deadband, "min_move": 5}],
        "guardrails": {"cooldown_hours": 72},
    })


def run(params: SimParams, seeds: range, policies: dict[str, list[Rule] | None]) -> dict[str, list[A.RunResult]]:
    out: dict[str, list[A.RunResult]] = {name: [] for name in policies}
    for seed in seeds:
        draws = world.Draws(seed)
        for name, rules in policies.items():
            out[name].append(RebalancingAccount(params, seed, A.Policy(name, rules), draws).run())
    return out


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    budgets = [float(b) for b in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["7000", "30000"])]
    training = range(1_000_000, 1_000_020)
    for budget in budgets:
        params = SimParams(monthly_budget=budget)
        started = time.process_time()
        grid = {f"CPQL ${t}": [rebalance_rule("cost_per_qualified_lead", t)] for t in (120, 150, 180, 200, 220)}
        grid |= {f"CPL ${t}": [rebalance_rule("cpl", t)] for t in (40, 50, 60, 70)}
        trained = run(params, training, {"static": None, **grid})
        ranked = sorted(grid, key=lambda k: cost_per_signed(trained[k]))
        print(f"\n${budget:,.0f}/month: training (20 seeds): " + ", ".join(
            f"{k} {cost_per_signed(trained[k]) / cost_per_signed(trained['static']) - 1:+.1%}" for k in ranked))
        best_cpql = next(k for k in ranked if k.startswith("CPQL"))
        best_cpl = next(k for k in ranked if k.startswith("CPL"))
        policies = {"static": None, f"rebalance {best_cpql}": grid[best_cpql], f"rebalance {best_cpl}": grid[best_cpl],
                    "rebalance CPQL $180 (shipped example)": [rebalance_rule("cost_per_qualified_lead", 180)]}
        results = run(params, range(seeds), policies)
        draws = resamples(seeds)
        print(f"${budget:,.0f}/month, {seeds} held-out seeds ({time.process_time() - started:.0f} s CPU)")
        for name, rs in results.items():
            spend = sum(r.spend for r in rs) / len(rs)
            signed = sum(r.signed for r in rs) / len(rs)
            actions = sum(r.actions for r in rs) / len(rs)
            refused = sum(r.refused for r in rs) / len(rs)
            vs = paired(rs, results["static"], draws).text() if name != "static" else "0"
            print(f"  {name:40s} cost/signed ${cost_per_signed(rs):,.0f}  vs static {vs}  spend ${spend:,.0f}  "
                  f"signed {signed:.1f}  moves applied {actions:.1f} refused {refused:.2f}")


if __name__ == "__main__":
    main()
