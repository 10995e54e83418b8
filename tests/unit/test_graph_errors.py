"""Classification of Meta's error objects into typed exceptions."""

from __future__ import annotations

import pytest

from shared.graph.errors import (
    KIND_ACTION,
    KIND_AD_ACCOUNT,
    KIND_APP,
    KIND_BUC,
    KIND_INSIGHTS,
    KIND_PAGE,
    KIND_USER,
    AuthError,
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


def _err(code, subcode=None, **extra):
    body = {"message": f"(#{code}) something", "type": "OAuthException", "code": code, "fbtrace_id": "AbC123"}
    if subcode is not None:
        body["error_subcode"] = subcode
    body.update(extra)
    return {"error": body}


@pytest.mark.parametrize(
    ("code", "subcode", "cls", "kind", "buc_type"),
    [
        (4, None, ThrottledError, KIND_APP, None),
        (4, 1504022, ThrottledError, KIND_INSIGHTS, None),
        (4, 1504039, ThrottledError, KIND_INSIGHTS, None),
        (17, None, ThrottledError, KIND_USER, None),
        (17, 2446079, ThrottledError, KIND_AD_ACCOUNT, None),
        (17, 1885172, ThrottledError, KIND_ACTION, None),
        (32, None, ThrottledError, KIND_PAGE, None),
        (341, None, ThrottledError, KIND_APP, None),
        (613, None, ThrottledError, KIND_APP, None),
        (613, 1996, ThrottledError, KIND_APP, None),
        (613, 1487742, ThrottledError, KIND_AD_ACCOUNT, None),
        (613, 1487632, ThrottledError, KIND_ACTION, None),
        (613, 5044001, ThrottledError, KIND_ACTION, None),
        (613, 1487225, ThrottledError, KIND_ACTION, None),
        (80000, 2446079, ThrottledError, KIND_BUC, "ads_insights"),
        (80001, None, ThrottledError, KIND_BUC, "pages"),
        (80002, None, ThrottledError, KIND_BUC, "instagram"),
        (80003, 2446079, ThrottledError, KIND_BUC, "custom_audience"),
        (80004, 2446079, ThrottledError, KIND_BUC, "ads_management"),
        (80005, None, ThrottledError, KIND_BUC, "leadgen"),
        (80006, None, ThrottledError, KIND_BUC, "messenger"),
        (80008, None, ThrottledError, KIND_BUC, "whatsapp_business_management"),
        (80009, None, ThrottledError, KIND_BUC, "catalog_management"),
        (80014, None, ThrottledError, KIND_BUC, "catalog_batch"),
        (80011, None, ThrottledError, KIND_BUC, None),
    ],
)
def test_throttles(code, subcode, cls, kind, buc_type):
    err = classify_error(_err(code, subcode), http_status=400)
    assert type(err) is cls
    assert err.kind == kind
    assert err.buc_type == buc_type


@pytest.mark.parametrize(
    ("code", "subcode", "cls"),
    [
        (190, None, AuthError),
        (190, 460, AuthError),
        (190, 463, AuthError),
        (190, 467, AuthError),
        (190, 492, AuthError),
        (102, None, AuthError),
        (104, None, AuthError),
        (10, None, PermissionDeniedError),
        (200, None, PermissionDeniedError),
        (200, 1870050, PermissionDeniedError),
        (294, None, PermissionDeniedError),
        (3, None, PermissionDeniedError),
        (100, None, InvalidRequestError),
        (100, 1487694, InvalidRequestError),
        (194, None, InvalidRequestError),
        (2635, None, InvalidRequestError),
        (100, 33, NotFoundError),
        (100, 1487534, TooMuchDataError),
        (100, 1504018, TooMuchDataError),
        (2, 1504038, TooMuchDataError),
        (1, None, TransientError),
        (2, None, TransientError),
        (2, 1504043, TransientError),
        (-2, 2490547, TransientError),
        (368, None, PolicyBlockedError),
        (506, None, GraphError),
    ],
)
def test_non_throttles(code, subcode, cls):
    err = classify_error(_err(code, subcode), http_status=400)
    assert type(err) is cls


def test_is_transient_flag_makes_unknown_codes_transient_but_not_auth():
    assert type(classify_error(_err(12345, is_transient=True))) is TransientError
    assert type(classify_error(_err(190, is_transient=True))) is AuthError
    # A code-17 example from Meta carries is_transient: it is still a throttle.
    assert type(classify_error(_err(17, 2446079, is_transient=True))) is ThrottledError


def test_reduce_data_message_on_code_1_is_too_much_data():
    body = _err(1)
    body["error"]["message"] = "Please reduce the amount of data you're asking for, then retry your request"
    assert type(classify_error(body)) is TooMuchDataError


def test_fields_and_error_data_json_string():
    body = _err(
        100,
        1487694,
        error_user_title="Bad targeting",
        error_user_msg="Pick another interest",
        error_data='{"blame_field_specs": [["targeting"]]}',
        is_transient=False,
    )
    err = classify_error(body, http_status=400)
    assert err.code == 100
    assert err.subcode == 1487694
    assert err.type == "OAuthException"
    assert err.fbtrace_id == "AbC123"
    assert err.user_title == "Bad targeting"
    assert err.user_message == "Pick another interest"
    assert err.blame_field_specs == [["targeting"]]
    text = str(err)
    assert "code=100" in text
    assert "subcode=1487694" in text
    assert "fbtrace_id=AbC123" in text
    assert "(#100) something" in text
    assert repr(err).startswith("<InvalidRequestError(")


def test_inner_object_accepted_and_malformed_bodies():
    assert type(classify_error({"code": 190, "message": "x"})) is AuthError
    assert type(classify_error(None, http_status=502)) is TransientError
    assert type(classify_error("<html>", http_status=500)) is TransientError
    assert type(classify_error({"error": "oops"}, http_status=400)) is GraphError
    assert type(classify_error({}, http_status=404)) is NotFoundError
    assert type(classify_error({"error": {"code": "not-a-number"}}, http_status=503)) is TransientError
    assert type(classify_error({}, http_status=429)) is ThrottledError


def test_throttled_str_has_scope_and_retry_after():
    err = classify_error(_err(80004, 2446079))
    assert isinstance(err, ThrottledError)
    err.scope = "buc:1:ads_management"
    err.retry_after = 12.5
    assert "scope=buc:1:ads_management" in str(err)
    assert "retry_after=12.5s" in str(err)
