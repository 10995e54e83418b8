"""Customer-file custom audiences: create, sessions, schema and hash checks, row limit."""

from __future__ import annotations

import hashlib
import json

from tests.fixtures.sandbox import SandboxHandle


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def _create(sandbox: SandboxHandle) -> str:
    status, headers, body = await sandbox.graph(
        "POST",
        f"{sandbox.account_id}/customaudiences",
        name="Qualified",
        subtype="CUSTOM",
        customer_file_source="USER_PROVIDED_ONLY",
    )
    assert status == 200
    assert json.loads(headers["X-Business-Use-Case-Usage"])["1000000001"][0]["type"] == "custom_audience"
    return body["id"]


async def test_create_requires_file_source(sandbox: SandboxHandle) -> None:
    status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/customaudiences", name="x")
    assert (status, body["error"]["code"]) == (400, 100)


async def test_users_session_counts_and_invalid_entries(sandbox: SandboxHandle) -> None:
    ca = await _create(sandbox)
    payload = {"schema": ["EMAIL", "PHONE"], "data": [[sha("a@x.com"), sha("15551234567")], ["plain@x.com", ""]]}
    session = {"session_id": 9778993, "batch_seq": 1, "last_batch_flag": False}
    status, _, body = await sandbox.graph(
        "POST", f"{ca}/users", payload=json.dumps(payload), session=json.dumps(session)
    )
    assert status == 200
    assert body == {
        "audience_id": ca,
        "session_id": 9778993,
        "num_received": 2,
        "num_invalid_entries": 1,
        "invalid_entry_samples": {"plain@x.com": "EMAIL value is not a SHA-256 hex digest"},
    }
    session.update(batch_seq=2, last_batch_flag=True)
    payload["data"] = [[sha("b@x.com"), ""], ["", ""]]  # a row without any identifier is invalid
    _, _, body = await sandbox.graph("POST", f"{ca}/users", payload=json.dumps(payload), session=json.dumps(session))
    assert (body["num_received"], body["num_invalid_entries"]) == (4, 2)
    _, _, read = await sandbox.graph("GET", ca, fields="approximate_count_lower_bound,name")
    assert read["approximate_count_lower_bound"] == 0, "Meta shows a new size only hours later"
    await sandbox.audiences(count_delay_seconds=0)
    _, _, read = await sandbox.graph("GET", ca, fields="approximate_count_lower_bound,approximate_count_upper_bound")
    assert (read["approximate_count_lower_bound"], read["approximate_count_upper_bound"]) == (2, 2)


async def test_usersreplace_schema_and_limits(sandbox: SandboxHandle) -> None:
    ca = await _create(sandbox)
    bad_schema = {"schema": ["EMAIL", "SHOE_SIZE"], "data": [["a", "b"]]}
    status, _, body = await sandbox.graph("POST", f"{ca}/users", payload=json.dumps(bad_schema))
    assert status == 400
    too_many = {"schema": "EMAIL_SHA256", "data": [sha("x")] * 10_001}
    status, _, body = await sandbox.graph("POST", f"{ca}/users", payload=json.dumps(too_many))
    assert status == 400
    ok = {"schema": "EMAIL_SHA256", "data": [sha(f"{i}@x.com") for i in range(10_000)]}
    status, _, body = await sandbox.graph(
        "POST",
        f"{ca}/usersreplace",
        payload=json.dumps(ok),
        session=json.dumps({"session_id": 1, "batch_seq": 1, "last_batch_flag": True}),
    )
    assert (status, body["num_received"], body["num_invalid_entries"]) == (200, 10_000, 0)
    status, _, _ = await sandbox.graph("POST", f"{ca}/usersreplace", payload=json.dumps(ok))
    assert status == 400  # session required
