"""The Graph client: client, errors, usage (rate-limit state), batch, paging, async insights jobs, metrics."""

from shared.graph.batch import BatchRequest, BatchResult
from shared.graph.client import DEFAULT, GraphClient, RetryPolicy, appsecret_proof
from shared.graph.errors import (
    AsyncJobFailedError,
    AsyncJobSkippedError,
    AuthError,
    GraphConnectionError,
    GraphError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    PolicyBlockedError,
    ThrottledError,
    TooMuchDataError,
    TransientError,
    classify_error,
)
from shared.graph.metrics import GraphMetrics
from shared.graph.usage import Priority, Scope

__all__ = [
    "DEFAULT",
    "AsyncJobFailedError",
    "AsyncJobSkippedError",
    "AuthError",
    "BatchRequest",
    "BatchResult",
    "GraphClient",
    "GraphConnectionError",
    "GraphError",
    "GraphMetrics",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "PolicyBlockedError",
    "Priority",
    "RetryPolicy",
    "Scope",
    "ThrottledError",
    "TooMuchDataError",
    "TransientError",
    "appsecret_proof",
    "classify_error",
]
