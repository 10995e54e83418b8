"""Meta's schema, read from the installed `facebook-business` SDK instead of written from memory.

The SDK is generated from Meta's API specs. For each node type the sandbox serves we load, once:

* the fields and their types (`<Class>._field_types`) and the enum classes (`_get_field_enum_info()`);
* each endpoint's writable params, their types and enums: every SDK method that builds a `FacebookRequest`
  (`create_*`, `get_*`, `api_update`, ...) is called with `pending=True`, which returns the request unsent, and
  its `TypeChecker` holds the param types.

A new SDK release therefore updates what the sandbox accepts and how it types its answers.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import GraphError

# Sandbox node kind -> SDK class (module facebook_business.adobjects.<lowercase name>).
SDK_CLASS = {
    "adaccount": "AdAccount",
    "campaign": "Campaign",
    "adset": "AdSet",
    "ad": "Ad",
    "adcreative": "AdCreative",
    "adimage": "AdImage",
    "page": "Page",
    "leadgen_form": "LeadgenForm",
    "lead": "Lead",
    "pixel": "AdsPixel",
    "customaudience": "CustomAudience",
    "report_run": "AdReportRun",
    "insights": "AdsInsights",
    "user": "User",
}
# Transport and paging params Graph accepts on every call; the SDK's generated param lists leave them out.
TRANSPORT_PARAMS = frozenset(
    {
        "access_token",
        "appsecret_proof",
        "appsecret_time",
        "method",
        "fields",
        "limit",
        "after",
        "before",
        "include_headers",
        "suppress_http_code",
        "format",
        "pretty",
        "locale",
        "__files__",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """One SDK-declared call: `method` on `edge` ("" = the node itself)."""

    method: str
    edge: str
    params: Mapping[str, str]
    enums: Mapping[str, frozenset[str]]
    target: str | None = None  # the SDK class of what the call returns (edge lists: the listed node type)


@dataclass(frozen=True)
class NodeType:
    name: str
    fields: Mapping[str, str]  # field -> SDK type ("string", "unsigned int", "datetime", "Status", "list<...>")
    enums: Mapping[str, frozenset[str]]  # enum type name -> values
    endpoints: Mapping[tuple[str, str], Endpoint]  # (method, edge) -> endpoint

    def endpoint(self, method: str, edge: str | None) -> Endpoint | None:
        return self.endpoints.get((method, edge or ""))

    def readable(self, name: str) -> bool:
        """A field of the node, or an edge that `fields=` may expand (`fields=ads{name}`)."""
        return name in self.fields or ("GET", name) in self.endpoints


def _enum_values(values: Any) -> frozenset[str]:
    """`SomeClass.Enum.__dict__.values()` as the SDK stores it, without the class's dunder entries."""
    mapping = getattr(values, "mapping", None)
    if mapping is not None:
        return frozenset(str(v) for k, v in mapping.items() if not k.startswith("__"))
    return frozenset(str(v) for v in values if isinstance(v, str))


@functools.cache
def node_type(name: str) -> NodeType:
    """The SDK's description of node type `name` (e.g. "AdSet"); cached for the process."""
    from facebook_business.api import FacebookRequest

    module = importlib.import_module(f"facebook_business.adobjects.{name.lower()}")
    cls = getattr(module, name)
    enums = {k: _enum_values(v) for k, v in cls._get_field_enum_info().items()}
    endpoints: dict[tuple[str, str], Endpoint] = {}
    instance = cls("0")
    for attr, fn in inspect.getmembers(cls, inspect.isfunction):
        if attr == "api_create" or "pending" not in inspect.signature(fn).parameters:
            continue
        request = fn(instance, pending=True)
        if not isinstance(request, FacebookRequest):
            continue
        checker = request._param_checker
        key = (request._method, request._endpoint)
        params = dict(checker._type_check_info)
        param_enums = {k: _enum_values(v) for k, v in checker._enum_data.items()}
        if key in endpoints:  # e.g. two SDK methods on one edge: accept the union
            params = {**endpoints[key].params, **params}
            param_enums = {**endpoints[key].enums, **param_enums}
        target = request._target_class.__name__ if request._target_class is not None else None
        if key in endpoints and target in (None, "AbstractCrudObject"):
            target = endpoints[key].target
        endpoints[key] = Endpoint(request._method, request._endpoint, params, param_enums, target)
    return NodeType(name, dict(cls._field_types), enums, endpoints)


def for_kind(kind: str) -> NodeType | None:
    name = SDK_CLASS.get(kind)
    return node_type(name) if name else None


# ---------------------------------------------------------------------- reads


def nonexisting_field(field: str, node_name: str) -> GraphError:
    """Meta's answer to `?fields=` naming something the node type does not have."""
    return GraphError(f"(#100) Tried accessing nonexisting field ({field}) on node type ({node_name})", code=100)


def base_field(name: str) -> str:
    """`campaign{id,name}`, `insights.date_preset(x)` -> the field name itself."""
    for sep in ("{", ".", "("):
        name = name.split(sep, 1)[0]
    return name.strip()


def check_fields(kind: str, fields: list[str]) -> None:
    """Every requested (base) field must exist on the node type."""
    nt = for_kind(kind)
    if nt is None:
        return
    for name in fields:
        if not nt.readable(name):
            raise nonexisting_field(name, nt.name)


def serialise(kind: str, view: dict[str, Any]) -> dict[str, Any]:
    """Give each value the JSON type the SDK declares (money and counts as strings where Meta sends strings)."""
    nt = for_kind(kind)
    if nt is None:
        return view
    for key, value in view.items():
        view[key] = _as_declared(nt.fields.get(key), value)
    return view


def _as_declared(declared: str | None, value: Any) -> Any:
    if declared is None or value is None or isinstance(value, bool):
        return value
    if declared == "string" and isinstance(value, int | float):
        return str(value)
    if declared in ("int", "unsigned int") and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if declared in ("int", "unsigned int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if declared == "float" and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


# ---------------------------------------------------------------------- writes


def check_params(kind: str, method: str, edge: str | None, params: dict[str, Any]) -> None:
    """Params against the SDK's declaration of this call.

    Writes (POST): an unknown param or a value of the wrong type is Meta's #100 naming the param. Reads and
    deletes: declared params are type- and enum-checked; undeclared ones are left alone (Graph ignores them).
    """
    nt = for_kind(kind)
    endpoint = nt.endpoint(method, edge) if nt else None
    if nt is None or endpoint is None:
        return
    for name in sorted(params):
        if name in TRANSPORT_PARAMS:
            continue
        declared = endpoint.params.get(name)
        if declared is None:
            if method == "POST":
                where = f"{nt.name} {edge}" if edge else f"{nt.name} update"
                raise _param_error(f"(#100) Param {name} is not a valid parameter for {where}", name)
            continue
        problem = type_problem(declared, params[name], endpoint.enums)
        if problem:
            raise _param_error(f"(#100) Param {name} {problem}", name)


def _param_error(message: str, name: str) -> GraphError:
    return GraphError(message, code=100, error_data={"blame_field_specs": [[name]]})


def type_problem(
    declared: str, value: Any, enums: Mapping[str, frozenset[str]], in_list: bool = False
) -> str | None:
    """Why `value` (form text or JSON value) is not of SDK type `declared`, or None if it is.

    Items of a `list<string>` may be JSON objects: Meta documents CAPI's `data` (declared `list<string>`) as an
    array of event objects, and the SDK sends each as a JSON string."""
    if value is None or value == "":
        return None
    if declared in enums:
        allowed = enums[declared]
        if str(value) not in allowed:
            return f"must be one of {{{', '.join(sorted(allowed))}}}"
        return None
    if declared.startswith("list<") and declared.endswith(">"):
        items = _as_list(value)
        if items is None:
            return "must be an array"
        inner = declared[5:-1]
        for item in items:
            problem = type_problem(inner, item, enums, in_list=True)
            if problem:
                return f"[] {problem}"
        return None
    if declared == "list":
        return None if _as_list(value) is not None else "must be an array"
    if declared in ("int", "unsigned int"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value)
        if isinstance(value, bool | dict | list) or not text.lstrip("-").isdigit():
            return "must be a number"
        if declared == "unsigned int" and int(text) < 0:
            return "must be a non-negative number"
        return None
    if declared == "float":
        try:
            float(str(value))
        except ValueError:
            return "must be a number"
        return None if not isinstance(value, bool | dict | list) else "must be a number"
    if declared == "bool":
        if isinstance(value, bool) or str(value).lower() in ("true", "false", "1", "0"):
            return None
        return "must be a boolean"
    if declared in ("string", "datetime", "file"):
        return None if in_list or not isinstance(value, dict | list) else "must be a string"
    # Object, map, map<...> and SDK classes (Targeting, ...): a JSON object or array.
    if isinstance(value, dict | list):
        return None
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        parsed = None
    return None if isinstance(parsed, dict | list) else "must be a JSON object"


def _as_list(value: Any) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return None
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, list) else None
    return [part.strip() for part in text.split(",") if part.strip()]
