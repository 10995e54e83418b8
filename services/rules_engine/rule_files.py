"""Loading rule files: every rule of a directory's YAML files, or every problem in them, located by file, 1-based
line and dotted field path (the format and its models: `rules.py`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from services.rules_engine.rules import Rule

logger = logging.getLogger(__name__)

class RuleProblem(BaseModel):
    """A problem in a rule file, located for a human: file, 1-based line, dotted field path."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class RuleLoadError(Exception):
    """Raised by `load_rules` when any rule file has problems; carries them all."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


_UNION_TAGS = frozenset({"condition", "group"})


def _field_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_TAGS or (isinstance(item, str) and item.startswith("function-")):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _locate(node: yaml.Node, loc: tuple[Any, ...]) -> int:
    """1-based line of the deepest YAML node reached by following a pydantic error ``loc``."""
    line = node.start_mark.line + 1
    for item in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(item):
                    found = (key, value)
                    break
            if found is None:
                if item in _UNION_TAGS or (isinstance(item, str) and item.startswith("function-")):
                    continue
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif isinstance(node, yaml.SequenceNode):
            if isinstance(item, int) and 0 <= item < len(node.value):
                node = node.value[item]
                line = node.start_mark.line + 1
            elif isinstance(item, str):
                continue  # a list written where a group {all: [...]} was expected, or a union tag
            else:
                break
        else:
            break
    return line


def _documents(text: str) -> Iterator[tuple[yaml.Node, Any]]:
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def _parse_file(path: Path, display: str) -> tuple[list[Rule], list[RuleProblem]]:
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    try:
        text = path.read_text(encoding="utf-8")
        documents = list(_documents(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        context = exc.context or ""
        if exc.context_mark is not None and exc.problem_mark is not None and context:
            context += f" (started on line {exc.context_mark.line + 1})"
        message = ", ".join(p for p in (context, exc.problem or "") if p) or "invalid YAML"
        return [], [RuleProblem(file=display, line=line, field=None, message=f"YAML syntax: {message}")]
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        return [], [RuleProblem(file=display, line=None, field=None, message=f"cannot read: {exc}")]

    for node, data in documents:
        if isinstance(data, list):
            items = [(node.value[i], item, (i,)) for i, item in enumerate(data)]
        else:
            items = [(node, data, ())]
        for item_node, item, prefix in items:
            if not isinstance(item, dict):
                problems.append(
                    RuleProblem(
                        file=display,
                        line=item_node.start_mark.line + 1,
                        field=None,
                        message="a rule must be a mapping with name, scope, conditions and actions",
                    )
                )
                continue
            try:
                rules.append(Rule.model_validate(item))
            except ValidationError as exc:
                for error in exc.errors():
                    loc = tuple(error["loc"])
                    problems.append(
                        RuleProblem(
                            file=display,
                            line=_locate(item_node, loc),
                            field=_field_path(prefix + loc) or None,
                            message=error["msg"].removeprefix("Value error, "),
                        )
                    )
    return rules, problems


def _rule_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def _load(directory: str | Path) -> tuple[list[Rule], list[RuleProblem]]:
    root = Path(directory)
    if not root.is_dir():
        return [], [RuleProblem(file=str(root), line=None, field=None, message="not a directory")]
    rules: list[Rule] = []
    problems: list[RuleProblem] = []
    seen: dict[str, str] = {}
    for path in _rule_files(root):
        display = str(path.relative_to(root))
        file_rules, file_problems = _parse_file(path, display)
        problems.extend(file_problems)
        if file_problems:
            continue
        for rule in file_rules:
            if rule.name in seen:
                problems.append(
                    RuleProblem(
                        file=display,
                        line=None,
                        field="name",
                        message=f"duplicate rule name {rule.name!r} (also in {seen[rule.name]})",
                    )
                )
                continue
            seen[rule.name] = display
            rules.append(rule)
    return rules, problems


def check_rules(directory: str | Path) -> list[RuleProblem]:
    """Validate every ``*.yaml``/``*.yml`` file under ``directory``; an empty list means all is well."""
    return _load(directory)[1]


def load_rules(directory: str | Path, *, strict: bool = True) -> list[Rule]:
    """Load every rule under ``directory`` (sorted by file name).

    Raises:
        RuleLoadError: when any file has a problem and ``strict`` is true. With ``strict=False`` the broken
            files are skipped (each problem is logged) and the valid rules are returned.
    """
    rules, problems = _load(directory)
    if problems:
        if strict:
            raise RuleLoadError(problems)
        for problem in problems:
            logger.error("rule file problem: %s", problem)
    return rules
