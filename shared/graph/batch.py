"""Graph Batch API: up to 50 operations per HTTP call, per-item results and typed errors.

Every operation still counts as one call against the rate limits (docs/meta-api.md §3), so each item is paced in
its own scopes and each item's headers feed the usage state. Items that failed transiently, were throttled or
came back `null` (the batch timed out before reaching them) are retried, bounded; nothing else is.

`execute_dependent_batch` runs operations that refer to earlier ones by name (`{result=campaign:$.id}`) as one
batch, once: a retry in a new batch would refer to names that no longer exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from shared.graph.errors import GraphError, ThrottledError, TransientError, classify_error
from shared.graph.metrics import endpoint_template
from shared.graph.usage import Priority, Scope

if TYPE_CHECKING:
    from shared.graph.client import GraphClient, Token, _Default

logger = logging.getLogger(__name__)

MAX_BATCH = 50


@dataclass(frozen=True)
class BatchRequest:
    """One operation. `params` go in the query for GET/DELETE and in the form body for POST."""

    method: str = "GET"
    path: str = ""
    params: Mapping[str, Any] | None = None
    scope: Scope | None = None
    name: str | None = None

    @classmethod
    def get(cls, path: str, params: Mapping[str, Any] | None = None, *, scope: Scope | None = None) -> BatchRequest:
        return cls("GET", path, params, scope)

    @classmethod
    def post(cls, path: str, data: Mapping[str, Any] | None = None, *, scope: Scope | None = None) -> BatchRequest:
        return cls("POST", path, data, scope)

    @classmethod
    def delete(cls, path: str, *, scope: Scope | None = None) -> BatchRequest:
        return cls("DELETE", path, None, scope)


@dataclass
class BatchResult:
    """The outcome of one operation: `code` and parsed `body`, or a typed `error`."""

    request: BatchRequest
    code: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    error: GraphError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> Any:
        """The body, or raise the item's error."""
        if self.error is not None:
            raise self.error
        return self.body


# Characters a dependent operation's body keeps unescaped, so Graph sees its `{result=<name>:$.id}` references.
_REFERENCE_SAFE = "{}:$=,[]\""


def encode_operation(client: GraphClient, request: BatchRequest, *, safe: str = "") -> dict[str, Any]:
    from shared.graph.client import encode_params

    method = request.method.upper()
    relative = f"{client.api_version}/{client.strip_version(request.path)}"
    params = encode_params(request.params)
    op: dict[str, Any] = {"method": method}
    if method in ("POST", "PUT"):
        op["relative_url"] = relative
        if params:
            op["body"] = urlencode(params, safe=safe)
    else:
        op["relative_url"] = f"{relative}?{urlencode(params)}" if params else relative
    if request.name:
        op["name"] = request.name
    return op


def _item_headers(item: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    raw = item.get("headers")
    if isinstance(raw, list):
        for header in raw:
            if isinstance(header, Mapping) and isinstance(header.get("name"), str):
                headers[header["name"]] = str(header.get("value", ""))
    elif isinstance(raw, Mapping):
        headers = {str(k): str(v) for k, v in raw.items()}
    return headers


def _item_body(item: Mapping[str, Any]) -> Any:
    body = item.get("body")
    if isinstance(body, str):  # the body is a JSON *string*: parse twice (docs/meta-api.md §3)
        try:
            return json.loads(body)
        except ValueError:
            return body
    return body


async def execute_batch(
    client: GraphClient,
    requests: Sequence[BatchRequest],
    *,
    token: Token = None,
    max_wait: float | _Default | None,
    max_rounds: int = 4,
) -> list[BatchResult]:
    """Run `requests` in batches of 50; one result per request, in order.

    Args:
        max_wait: as for every client call: DEFAULT = the client's, None = no limit, a number = seconds.
        max_rounds: how many times a failed-transient/throttled/`null` item is attempted in all.
    """
    limit = client.resolve_max_wait(max_wait)
    token_value = client.token_value(token)
    results = [BatchResult(request) for request in requests]
    scopes = [client.scopes_for(r.method.upper(), client.strip_version(r.path), r.scope, token_value)
              for r in requests]
    priorities = [r.scope.priority if r.scope is not None else Priority.NORMAL for r in requests]
    pending = list(range(len(requests)))
    attempts = [0] * len(requests)
    while pending:
        # Items whose scopes are blocked beyond max_wait fail now with ThrottledError; the rest wait together.
        # A scope due for a probe takes one item (one call) this round; its others wait for the probe's answer.
        ready: list[int] = []
        probes: set[str] = set()
        for index in pending:
            try:
                client.check_wait(scopes[index], limit, priorities[index])
            except ThrottledError as exc:
                results[index].error = exc
                continue
            due = client.usage.probe_due(scopes[index])
            if due & probes:
                continue
            probes |= due
            ready.append(index)
        if not ready:
            break
        chunk = ready[:MAX_BATCH]
        # One HTTP call, but len(chunk) calls against the limits: wait for every scope, count every item.
        await client.wait_scopes(sorted({s for i in chunk for s in scopes[i]}), limit,
                                 max(priorities[i] for i in chunk))
        counted = [s for i in chunk for s in scopes[i]]
        client.usage.on_send(counted)
        try:
            response = await client.request(
                "POST",
                "",
                data={"batch": [encode_operation(client, requests[i]) for i in chunk], "include_headers": True},
                token=token_value,
                max_wait=limit,
                idempotent=all(requests[i].method.upper() == "GET" for i in chunk),
                form_token=True,
                paced=False,
            )
        finally:
            client.usage.on_complete(counted)
        items = response.get("data") if isinstance(response, Mapping) and "data" in response else response
        if not isinstance(items, list):
            items = []
        retry: list[int] = []
        for position, index in enumerate(chunk):
            attempts[index] += 1
            item = items[position] if position < len(items) else None
            request = requests[index]
            path = client.strip_version(request.path)
            if not isinstance(item, Mapping):
                # `null`: the batch timed out before this operation ran.
                results[index].error = TransientError("batch item timed out (null result)")
                client.metrics.calls.labels(endpoint_template(path), request.method.upper(), "batch_null").inc()
            else:
                headers = _item_headers(item)
                body = _item_body(item)
                code = item.get("code")
                client.observe_headers(headers, path, request.scope)
                result = results[index]
                result.code = code if isinstance(code, int) else None
                result.headers = headers
                result.body = body
                raw_error = isinstance(body, Mapping) and isinstance(body.get("error"), Mapping)
                if result.code is not None and result.code < 400 and not raw_error:
                    result.error = None
                    client.learn(path, request.scope, headers)
                    client.metrics.calls.labels(endpoint_template(path), request.method.upper(), "ok").inc()
                    continue
                error = classify_error(body, http_status=result.code)
                result.error = error
                outcome = "throttled" if isinstance(error, ThrottledError) else "error"
                client.metrics.calls.labels(endpoint_template(path), request.method.upper(), outcome).inc()
                if isinstance(error, ThrottledError):
                    client.record_throttle(
                        error, request.method.upper(), path, request.scope, headers, token_value, attempts[index]
                    )
            item_error = results[index].error
            if isinstance(item_error, (TransientError, ThrottledError)) and attempts[index] < max_rounds:
                retry.append(index)
                client.metrics.retries.labels("batch_item").inc()
        if retry:
            logger.info("graph batch: retrying %s of %s items", len(retry), len(chunk))
        done = set(chunk) - set(retry)
        pending = [i for i in pending if i not in done]
        if retry and not any(isinstance(results[i].error, ThrottledError) for i in retry):
            await client.sleep_backoff(max(attempts[i] for i in retry))
    return results


async def execute_dependent_batch(
    client: GraphClient, requests: Sequence[BatchRequest], *, max_wait: float | _Default | None
) -> list[BatchResult]:
    """Run named operations that refer to earlier ones (`{result=<name>:$.id}`) as one batch; one result each.

    Sent once and never retried item by item (a new batch would lack the names referred to), as a non-idempotent
    call; `omit_response_on_success` is off so every created id comes back. An item whose `null` result says the
    batch timed out before it ran gets a `TransientError`.
    """
    ops = []
    for request in requests:
        op = encode_operation(client, request, safe=_REFERENCE_SAFE)
        op["omit_response_on_success"] = False
        ops.append(op)
    response = await client.request(
        "POST", "", data={"batch": ops, "include_headers": True}, max_wait=max_wait, idempotent=False, form_token=True
    )
    data = response.get("data") if isinstance(response, Mapping) else None
    items: list[Any] = data if isinstance(data, list) else []
    results = []
    for position, request in enumerate(requests):
        result = BatchResult(request)
        item = items[position] if position < len(items) else None
        if not isinstance(item, Mapping):
            result.error = TransientError("batch item timed out (null result)")
        else:
            result.headers = _item_headers(item)
            client.observe_headers(result.headers, client.strip_version(request.path), request.scope)
            result.body = _item_body(item)
            code = item.get("code")
            result.code = code if isinstance(code, int) else None
            if result.code is None or result.code >= 400:
                result.error = classify_error(result.body, http_status=result.code)
        results.append(result)
    return results
