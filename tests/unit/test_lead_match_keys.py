"""The match keys that tie a CRM outcome to its stored lead: the same key however the CRM writes the value."""

from __future__ import annotations

import hashlib

from shared.leads import email_key, lead_match_keys, phone_key, region_code


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_email_key_is_the_hash_of_the_normalized_address_or_the_hash_given() -> None:
    assert email_key("  Jane.Doe@Example.COM ") == _sha("jane.doe@example.com")
    assert email_key(_sha("jane.doe@example.com").upper()) == _sha("jane.doe@example.com")
    assert email_key("not an address") is None
    assert email_key("") is None
    assert email_key(None) is None


def test_phone_key_is_the_same_for_national_and_international_forms() -> None:
    key = _sha("13125550142")
    assert phone_key("+1 (312) 555-0142") == key
    assert phone_key("(312) 555-0142", "US") == key
    assert phone_key("312.555.0142", "United States") == key
    assert phone_key("020 7946 0958", "GB") == _sha("442079460958")
    assert phone_key("12") is None


def test_region_code_reads_names_and_falls_back() -> None:
    assert region_code("United Kingdom") == "GB"
    assert region_code("us") == "US"
    assert region_code("Atlantis") == "US"
    assert region_code(None, "CA") == "CA"


def test_lead_match_keys_from_metas_answers() -> None:
    answers = {"EMAIL": "Mary@Example.com", "phone_number": ["+44 20 7946 0958"], "country": "GB"}
    assert lead_match_keys(answers) == (_sha("mary@example.com"), _sha("442079460958"))
    assert lead_match_keys({"work_email": "w@example.com"}) == (_sha("w@example.com"), None)
    assert lead_match_keys({}) == (None, None)
