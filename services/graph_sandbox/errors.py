"""Meta-shaped Graph API errors.

Every error the sandbox returns has Meta's envelope
`{"error": {"message", "type", "code", "error_subcode", "fbtrace_id", ...}}` and, like Meta, HTTP 400 for
validation, auth and throttling errors (throttles are *not* 429; see docs/meta-api.md §2.5, §4.1).
"""

from __future__ import annotations

import secrets
import string
from typing import Any

_TRACE_ALPHABET = string.ascii_letters + string.digits + "_-"


def new_fbtrace_id() -> str:
    """A short opaque support id like Meta's (`AbC1dEf2GhI`)."""
    return "".join(secrets.choice(_TRACE_ALPHABET) for _ in range(11))


class GraphError(Exception):
    """An error answered to the caller in Meta's shape."""

    def __init__(
        self,
        message: str,
        *,
        code: int,
        subcode: int | None = None,
        type_: str = "OAuthException",
        status: int = 400,
        is_transient: bool | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        error_data: dict[str, Any] | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.subcode = subcode
        self.type = type_
        self.status = status
        self.is_transient = is_transient
        self.user_title = user_title
        self.user_msg = user_msg
        self.error_data = error_data
        self.extra_headers = dict(extra_headers or {})

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            err["error_subcode"] = self.subcode
        if self.is_transient is not None:
            err["is_transient"] = self.is_transient
        if self.user_title:
            err["error_user_title"] = self.user_title
        if self.user_msg:
            err["error_user_msg"] = self.user_msg
        if self.error_data is not None:
            err["error_data"] = self.error_data
        err["fbtrace_id"] = new_fbtrace_id()
        return {"error": err}

    @classmethod
    def from_object(cls, obj: dict[str, Any], status: int = 400) -> GraphError:
        """Build from a Meta error object supplied through the control API (fault injection)."""
        return cls(
            str(obj.get("message", "An unexpected error has occurred. Please retry your request later.")),
            code=int(obj.get("code", 2)),
            subcode=obj.get("error_subcode"),
            type_=str(obj.get("type", "OAuthException")),
            status=status,
            is_transient=obj.get("is_transient", True),
            user_title=obj.get("error_user_title"),
            user_msg=obj.get("error_user_msg"),
            error_data=obj.get("error_data"),
        )


def unsupported_get(object_id: str, method: str = "get") -> GraphError:
    """Meta's answer for an unknown or inaccessible node (code 100, subcode 33)."""
    return GraphError(
        f"Unsupported {method} request. Object with ID '{object_id}' does not exist, cannot be loaded due to "
        "missing permissions, or does not support this operation. Please read the Graph API documentation at "
        "https://developers.facebook.com/docs/graph-api",
        code=100,
        subcode=33,
        type_="GraphMethodException",
    )


def unknown_path(path: str) -> GraphError:
    return GraphError(f"Unknown path components: /{path}", code=2500)


def invalid_param(
    message: str,
    *,
    subcode: int | None = None,
    user_title: str | None = None,
    user_msg: str | None = None,
    blame: list[str] | None = None,
) -> GraphError:
    """Code 100 'Invalid parameter', optionally naming the field like Meta's `blame_field_specs`."""
    return GraphError(
        f"(#100) {message}" if not message.startswith("(#") else message,
        code=100,
        subcode=subcode,
        user_title=user_title,
        user_msg=user_msg,
        error_data={"blame_field_specs": [[b] for b in blame]} if blame else None,
    )


def missing_param(name: str) -> GraphError:
    return GraphError(
        f"(#100) The parameter {name} is required",
        code=100,
        error_data={"blame_field_specs": [[name]]},
    )


def token_expired() -> GraphError:
    return GraphError(
        "Error validating access token: Session has expired on Sunday, 22-Nov-26 00:00:00 PST. "
        "The current time is later.",
        code=190,
        subcode=463,
    )


def token_missing() -> GraphError:
    return GraphError("An access token is required to request this resource.", code=104)


def token_invalid() -> GraphError:
    return GraphError("Invalid OAuth access token - Cannot parse access token", code=190, subcode=467)


def bad_appsecret_proof() -> GraphError:
    return GraphError("Invalid appsecret_proof provided in the API argument", code=100, type_="GraphMethodException")


def unversioned_call(latest: str) -> GraphError:
    # Marketing API calls without a version fail (docs/meta-api.md §1.3); Meta answers with its
    # "deprecated version" error because the unversioned call resolves to the app's (old) default.
    return GraphError(
        f"(#2635) You are calling a deprecated version of the Ads API. Please update to the latest version: {latest}.",
        code=2635,
    )
