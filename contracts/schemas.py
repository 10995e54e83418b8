"""Generate the committed JSON Schemas (`contracts/schemas/<Type>.v<N>.json`) from the message models."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.messages import MESSAGES

SCHEMA_DIR = Path(__file__).parent / "schemas"


def render() -> dict[str, str]:
    """File name → JSON text for every message."""
    out = {}
    for cls in MESSAGES:
        type_name = cls.model_fields["type"].default
        version = cls.model_fields["schema_version"].default
        schema = cls.model_json_schema(mode="validation")
        schema["$id"] = f"https://leadwire.dev/schemas/{type_name}.v{version}.json"
        schema["title"] = type_name
        schema["x-routing-key"] = cls.routing_key
        schema["x-exchange"] = "leadwire"
        out[f"{type_name}.v{version}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in set(directory.glob("*.json")) - set(written):
        stale.unlink()
    return written
