"""Cursor pagination: follow `paging.next` until it is absent.

Meta can return an empty page that still has a `next` link (docs/meta-api.md §9.5), so an empty page does not
end the loop; only a missing `next` does. Meta's `next` URL carries the access token in its query string: the
token (and any proof) is dropped from it and the page is requested through the client, header-authenticated.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from shared.graph.errors import TransientError
from shared.graph.metrics import endpoint_template
from shared.graph.usage import Scope, account_in_path

if TYPE_CHECKING:
    from shared.graph.client import GraphClient, Token, _Default

logger = logging.getLogger(__name__)

_DROP_PARAMS = {"access_token", "appsecret_proof", "appsecret_time"}


def next_request(next_url: str) -> tuple[str, dict[str, str]]:
    """Split a `paging.next` URL into (path without version, params without credentials)."""
    parts = urlsplit(next_url)
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _DROP_PARAMS}
    return parts.path, params


async def paginate_pages(
    client: GraphClient,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    token: Token = None,
    scope: Scope | None = None,
    max_wait: float | _Default | None = None,
    max_pages: int | None = None,
    max_empty_pages: int = 50,
) -> AsyncIterator[dict[str, Any]]:
    """Every page (the whole response object) of a cursor-paginated edge.

    Args:
        max_pages: stop after this many pages (None: all).
        max_empty_pages: raise TransientError after this many empty pages in a row that still have `next`.
    """
    from shared.graph.client import DEFAULT

    wait = DEFAULT if max_wait is None else max_wait
    page = await client.get(path, params, token=token, scope=scope, max_wait=wait)
    count = 1
    empty_run = 0
    while True:
        yield page
        paging = page.get("paging") if isinstance(page, Mapping) else None
        next_url = paging.get("next") if isinstance(paging, Mapping) else None
        if not isinstance(next_url, str) or not next_url:
            return
        if max_pages is not None and count >= max_pages:
            return
        data = page.get("data")
        empty_run = empty_run + 1 if isinstance(data, list) and not data else 0
        if empty_run > max_empty_pages:
            # Never end silently on a `next` link (that would truncate data); a long run of empty pages is a
            # server problem the caller should see.
            raise TransientError(f"{empty_run} empty pages in a row with a next link on {endpoint_template(path)}")
        next_path, next_params = next_request(next_url)
        page = await client.get(next_path, next_params, token=token, scope=scope, max_wait=wait)
        count += 1


async def paginate(
    client: GraphClient,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    token: Token = None,
    scope: Scope | None = None,
    max_wait: float | _Default | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Every item in `data` across all pages.

    Objects listed under an ad account (`act_<id>/campaigns`, ...) are remembered as belonging to it, so later
    calls on their own ids are paced and blocked in that account's scopes.
    """
    account = (scope.account if scope is not None else None) or account_in_path(path)
    async for page in paginate_pages(client, path, params, token=token, scope=scope, max_wait=max_wait):
        data = page.get("data") if isinstance(page, Mapping) else None
        if not isinstance(data, list):
            continue
        for item in data:
            if account and isinstance(item, Mapping) and isinstance(item.get("id"), str):
                client.usage.learn_account(item["id"], account)
            yield item
