"""`.env.example` documents every variable a settings block reads, so an operator can see them all in one place."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from types import ModuleType

from pydantic_settings import BaseSettings

import services
import shared.settings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def _settings_modules() -> list[ModuleType]:
    modules = [shared.settings]
    for info in pkgutil.iter_modules(services.__path__):
        if info.ispkg and importlib.util.find_spec(f"services.{info.name}.settings") is not None:
            modules.append(importlib.import_module(f"services.{info.name}.settings"))
    return modules


def _variables() -> set[str]:
    names = set()
    for module in _settings_modules():
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, BaseSettings) and obj.__module__ == module.__name__:
                prefix = obj.model_config.get("env_prefix", "")
                for name, field in obj.model_fields.items():
                    alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
                    names.add((alias or prefix + name).upper())
    return names


def test_every_settings_variable_is_in_env_example() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE.read_text(encoding="utf-8"), re.MULTILINE))
    variables = _variables()
    assert len(variables) > 40  # the scan found the blocks (a broken scan would pass with nothing)
    assert sorted(variables - documented) == []
