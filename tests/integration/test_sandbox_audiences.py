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


async def _upload(sandbox: SandboxHandle, ca: str, emails: list[str], session: dict[str, object],
                  edge: str = "users", method: str = "POST") -> tuple[int, dict[str, object]]:
    payload = {"schema": ["EMAIL"], "data": [[sha(e)] for e in emails]}
    status, _, body = await sandbox.graph(method, f"{ca}/{edge}", payload=json.dumps(payload),
                                          session=json.dumps(session))
    return status, body


async def test_session_batches_come_in_order_and_nothing_after_the_last(sandbox: SandboxHandle) -> None:
    ca = await _create(sandbox)
    ok, _ = await _upload(sandbox, ca, ["a@x.com"], {"session_id": 5, "batch_seq": 1, "last_batch_flag": False})
    assert ok == 200
    skipped, body = await _upload(sandbox, ca, ["b@x.com"], {"session_id": 5, "batch_seq": 3,
                                                            "last_batch_flag": False})
    assert (skipped, body["error"]["code"]) == (400, 100)
    assert "batch_seq must be 2" in body["error"]["message"]
    last, body = await _upload(sandbox, ca, ["b@x.com"], {"session_id": 5, "batch_seq": 2, "last_batch_flag": True})
    assert (last, body["num_received"]) == (200, 2)
    late, body = await _upload(sandbox, ca, ["c@x.com"], {"session_id": 5, "batch_seq": 3, "last_batch_flag": True})
    assert late == 400
    assert "has ended" in body["error"]["message"]
    # Removal in its own session, with the same rows (a DELETE, or a POST with Graph's method override).
    gone, body = await _upload(sandbox, ca, ["a@x.com"], {"session_id": 6, "batch_seq": 1, "last_batch_flag": True},
                               method="DELETE")
    assert gone == 200, body
    await sandbox.audiences(count_delay_seconds=0)
    _, _, size = await sandbox.graph("GET", ca, fields="approximate_count_lower_bound")
    assert size["approximate_count_lower_bound"] == 1


async def test_lookalike_needs_a_spec_and_a_seed_of_100(sandbox: SandboxHandle) -> None:
    seed = await _create(sandbox)
    await sandbox.audiences(count_delay_seconds=0)
    await _upload(sandbox, seed, [f"p{i}@x.com" for i in range(99)], {"session_id": 1, "batch_seq": 1,
                                                                      "last_batch_flag": True})

    async def lookalike(spec: dict[str, object]) -> tuple[int, dict[str, object]]:
        status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/customaudiences", name="LAL",
                                              subtype="LOOKALIKE", origin_audience_id=seed,
                                              lookalike_spec=json.dumps(spec))
        return status, body

    status, body = await lookalike({"ratio": 0.01, "country": "US"})
    assert (status, body["error"]["code"]) == (400, 2654), "99 people: too small"
    assert "at least 100" in body["error"]["message"]
    await _upload(sandbox, seed, ["p99@x.com"], {"session_id": 2, "batch_seq": 1, "last_batch_flag": True})
    for bad in ({"ratio": 0.25, "country": "US"}, {"ratio": 0.015, "country": "US"}, {"ratio": 0.01}):
        status, body = await lookalike(bad)
        assert (status, body["error"]["code"]) == (400, 100), bad
    status, body = await lookalike({"ratio": 0.01, "location_spec": {"geo_locations": {"countries": ["US"]}}})
    assert status == 200, body
    _, _, node = await sandbox.graph("GET", str(body["id"]), fields="subtype,origin_audience_id,lookalike_spec")
    assert (node["subtype"], node["origin_audience_id"]) == ("LOOKALIKE", seed)
    status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/customaudiences", name="LAL of LAL",
                                          subtype="LOOKALIKE", origin_audience_id=str(body["id"]),
                                          lookalike_spec=json.dumps({"ratio": 0.01, "country": "US"}))
    assert status == 400
    assert "cannot be the seed" in body["error"]["message"]
