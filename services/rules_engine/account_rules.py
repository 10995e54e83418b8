"""Each ad account's rules: its own rule directory (LEADWIRE_ACCOUNTS_FILE `rules_dir`) or RULES_DIR.

An account with a directory of its own is judged by those rules only, and those rules judge that account only
(their `scope.accounts` becomes that account); RULES_DIR's rules judge the other accounts. Consent, cooldowns and
breakers are kept per rule name, so a name must be unique across every directory loaded: a rule whose name another
directory already uses is skipped with a problem (rename it, e.g. `scale-winners-houston`), never merged.

Without accounts of their own directory this is RULES_DIR alone, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from services.rules_engine.model import norm_account
from services.rules_engine.rule_files import RuleProblem, check_rules, load_rules
from services.rules_engine.rules import Rule


def _scoped(rule: Rule, accounts: Sequence[str]) -> Rule:
    return rule.model_copy(update={"scope": rule.scope.model_copy(update={"accounts": list(accounts)})})


def _load(directory: Path, label: str) -> tuple[list[Rule], list[RuleProblem]]:
    problems = check_rules(directory)
    if label:
        problems = [p.model_copy(update={"file": f"{label}: {p.file}"}) for p in problems]
    return load_rules(directory, strict=False), problems


def load_account_rules(
    default_dir: Path, own_dirs: Mapping[str, Path], accounts: Sequence[str]
) -> tuple[list[Rule], list[RuleProblem]]:
    """The rules to evaluate and the problems found, for `accounts` (empty: every stored account) of which those
    in `own_dirs` have rules of their own."""
    if not own_dirs:
        return _load(default_dir, "")
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    origin: dict[str, str] = {}

    def add(rule: Rule, where: str) -> None:
        if rule.name in origin:
            problems.append(RuleProblem(
                file=where, line=None, field="name",
                message=f"rule name {rule.name!r} is also used in {origin[rule.name]}: names are unique across "
                        "every account's rules (consent is given per name); this one is skipped"))
            return
        origin[rule.name] = where
        rules.append(rule)

    own = {norm_account(a) for a in own_dirs}
    others = [a for a in accounts if norm_account(a) not in own]
    if others:
        loaded, found = _load(default_dir, "")
        problems += found
        for rule in loaded:
            listed = [a for a in rule.scope.accounts if norm_account(a) not in own] if rule.scope.accounts else others
            if listed:
                add(_scoped(rule, listed), str(default_dir))
    for account, directory in own_dirs.items():
        where = f"{account} ({directory})"
        loaded, found = _load(directory, account)
        problems += found
        for rule in loaded:
            if rule.scope.accounts and norm_account(account) not in {norm_account(a) for a in rule.scope.accounts}:
                problems.append(RuleProblem(
                    file=where, line=None, field="scope.accounts",
                    message=f"rule {rule.name!r} in {account}'s rules names other accounts only: skipped"))
                continue
            add(_scoped(rule, [account]), where)
    return rules, problems
