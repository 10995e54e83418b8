"""Graph batch requests: `POST /` (or `/vNN.N/`) with `batch=[{method, relative_url, body?, name?}]`.

Each item runs through the same pipeline as a plain call (auth, faults, rate limits - every item counts),
results come back in request order as `{"code", "headers": [{"name","value"}], "body": "<JSON string>"}`, and
with the `batch_null_rate` fault some items come back as `null` (not executed; the caller retries them).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .core import VERSION_RE, GraphRequest, GraphResponse, Sandbox, _check_auth, execute, json_param
from .errors import GraphError

MAX_BATCH = 50
_REF = re.compile(r"\{result=([^:}]+):\$\.([^}]*)\}")


def _lookup(body: Any, path: str) -> str:
    values: list[Any] = [body]
    for part in [p for p in path.split(".") if p]:
        nxt: list[Any] = []
        for value in values:
            if part == "*" and isinstance(value, list):
                nxt.extend(value)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                nxt.append(value[int(part)])
            elif isinstance(value, dict) and part in value:
                nxt.append(value[part])
        values = nxt
    return ",".join(str(v) for v in values)


def _substitute(text: str, named: dict[str, Any]) -> str:
    def repl(match: re.Match[str]) -> str:
        name, path = match.group(1), match.group(2)
        if name not in named:
            raise GraphError(f"(#100) Batch reference to unknown or failed operation '{name}'", code=100)
        return _lookup(named[name], path)

    return _REF.sub(repl, text)


async def run_batch(
    sb: Sandbox, params: dict[str, Any], token: str | None, version: str | None, base_url: str, agent: str = ""
) -> GraphResponse:
    try:
        ops = json_param(params, "batch")
        if not isinstance(ops, list):
            raise GraphError("(#100) The parameter batch must be a JSON array", code=100)
        if len(ops) > MAX_BATCH:
            raise GraphError(
                f"(#100) Too many requests in batch message. Maximum batch size is {MAX_BATCH}",
                code=100,
                type_="GraphBatchException",
            )
        _check_auth(sb, GraphRequest("POST", "", version, params, token, base_url))
    except GraphError as err:
        headers = sb.limiter.headers(["app"])
        headers.update(err.extra_headers)
        return GraphResponse(err.status, err.body(), headers)
    include_headers = str(params.get("include_headers", "true")).lower() != "false"
    named: dict[str, Any] = {}
    results: list[Any] = []
    for op in ops:
        results.append(await _run_op(sb, op, params, token, version, base_url, named, include_headers, agent))
    return GraphResponse(200, results, sb.limiter.headers(["app"]))


async def _run_op(
    sb: Sandbox,
    op: Any,
    top: dict[str, Any],
    token: str | None,
    version: str | None,
    base_url: str,
    named: dict[str, Any],
    include_headers: bool,
    agent: str,
) -> Any:
    if not isinstance(op, dict) or "relative_url" not in op:
        err = GraphError("(#100) Each batch operation needs method and relative_url", code=100)
        return {"code": 400, "headers": [], "body": json.dumps(err.body())}
    method = str(op.get("method", "GET")).upper()
    try:
        relative = _substitute(str(op["relative_url"]), named)
        body = op.get("body")
        if isinstance(body, str):
            body = _substitute(body, named)
    except GraphError as err:
        return {"code": err.status, "headers": [], "body": json.dumps(err.body())}
    split = urlsplit(relative)
    segments = [s for s in split.path.split("/") if s]
    op_version = version
    if segments and VERSION_RE.match(segments[0]):
        op_version = segments.pop(0)
    path = "/".join(segments)
    if sb.faults.applies(path) and sb.roll(sb.faults.batch_null_rate):
        return None  # partially completed batch: Meta answers null for items it did not run
    op_params: dict[str, Any] = dict(parse_qsl(split.query, keep_blank_values=True))
    if isinstance(body, str):
        op_params.update(parse_qsl(body, keep_blank_values=True))
    elif isinstance(body, dict):
        op_params.update(body)
    if "appsecret_proof" in top and "appsecret_proof" not in op_params and "access_token" not in op_params:
        op_params["appsecret_proof"] = top["appsecret_proof"]
    op_token = str(op_params.get("access_token") or token or "") or None
    if str(op_params.get("method", "")).upper() in ("GET", "POST", "DELETE"):
        method = str(op_params.pop("method")).upper()
    req = GraphRequest(method, path, op_version, op_params, op_token, base_url, in_batch=True, agent=agent)
    resp = await execute(sb, req)
    if resp.hang:
        return None  # a timed-out item comes back as null, like a partially completed batch
    if op.get("name") and resp.status == 200:
        named[str(op["name"])] = resp.body
    item: dict[str, Any] = {"code": resp.status, "body": json.dumps(resp.body)}
    if include_headers:
        item["headers"] = [{"name": k, "value": v} for k, v in resp.headers.items()] + [
            {"name": "Content-Type", "value": "application/json; charset=UTF-8"}
        ]
    return item
