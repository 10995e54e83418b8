"""A Page's own access token: the one token Meta takes for listing (or creating) a Page's lead forms.

Meta lists a Page's lead forms only with that Page's token, refusing a user or system-user token with code 190
(docs/meta-api.md §7.5). An operator may set META_PAGE_ACCESS_TOKEN; when it is unset leadwire reads each Page's
token with the system-user token (`GET /{page}?fields=access_token`), as Meta hands it to a token that manages the
Page, so several Pages need no token each in the settings. The lead_fetcher's backfill and `leadwire forms list`
both come here, so the two cannot drift apart.
"""

from __future__ import annotations

import logging

from pydantic import SecretStr

from shared.graph import GraphClient, GraphError, Priority, Scope
from shared.logging import register_secret
from shared.settings import MetaSettings

logger = logging.getLogger(__name__)


def configured_forms_token(meta: MetaSettings) -> SecretStr | None:
    """META_PAGE_ACCESS_TOKEN, or None when it is not set (then `page_access_token` reads the Page's own)."""
    return meta.page_access_token if meta.page_access_token.get_secret_value() else None


async def page_access_token(graph: GraphClient, page_id: str, token: SecretStr | str | None) -> str | None:
    """The Page's own access token, read with a token that manages it; None when Meta gives none (the reason is
    logged by class only: an error may quote the request). The token read is registered as a secret, so no log
    line can show it."""
    try:
        answer = await graph.get(page_id, {"fields": "access_token"}, token=token,
                                 scope=Scope.page_api(page_id, Priority.BACKGROUND))
    except GraphError as exc:
        logger.warning("the Page's access token could not be read: %s", type(exc).__name__,
                       extra={"page_id": page_id})
        return None
    found = answer.get("access_token")
    if not isinstance(found, str) or not found:
        return None
    register_secret(found)
    return found
