"""Customer-information normalization and hashing, pinned to Meta's published vectors and to the official SDK."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import date

import pycountry
import pytest
from facebook_business.adobjects.serverside.normalize import Normalize

from contracts.conversions import ConversionUser
from shared.meta.customer_data import (
    ISO_ALPHA2,
    InvalidFieldError,
    NormalizedUser,
    is_sha256,
    normalize_city,
    normalize_country,
    normalize_date_of_birth,
    normalize_email,
    normalize_external_id,
    normalize_fbc,
    normalize_fbp,
    normalize_first_name,
    normalize_gender,
    normalize_ip,
    normalize_last_name,
    normalize_lead_id,
    normalize_phone,
    normalize_state,
    normalize_user,
    normalize_zip,
    sha256_hex,
)

TODAY = date(2026, 11, 22)


def h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashed(field: str, value: str, **user: str) -> str:
    """The hash our pipeline produces for one contract field."""
    result = normalize_user({field: value, **user}, today=TODAY)
    assert result.dropped == [], result.dropped
    key = {
        "email": "em",
        "phone": "ph",
        "first_name": "fn",
        "last_name": "ln",
        "city": "ct",
        "state": "st",
        "zip": "zp",
        "gender": "ge",
        "date_of_birth": "db",
    }.get(field, field)
    return result.user_data[key]


# --- Meta's published vectors (docs/meta-api.md §8.3 and §12.3) -------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "prefix", "suffix"),
    [
        ("email", "John_Smith@gmail.com", "62a14e44", "d505ed9aa0f62f"),
        ("phone", "(650)555-1212", "e323ec62", "16807ab3176"),
        ("first_name", "Mary", "6915771b", "c449f4ec"),
        ("first_name", "Valéry", "08e1996b", "417149c"),
        ("date_of_birth", "2/16/1997", "01acdbf6", "b94f40f0c"),
        ("country", "United States", "79adb2a2", "4a904621"),
    ],
)
def test_meta_published_vectors(field: str, raw: str, prefix: str, suffix: str) -> None:
    digest = hashed(field, raw)
    assert digest.startswith(prefix)
    assert digest.endswith(suffix)


def test_meta_customer_file_vectors() -> None:
    assert hashed("email", "mary@example.com") == ("f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79")
    assert hashed("phone", "+1 555 987 6543") == ("1ef970831d7963307784fa8688e8fce101a15685d62aa765fed23f3a2c576a4e")


def test_literal_vectors_match_hashlib() -> None:
    # Guards the helper itself: a broken sha256_hex would pass every "hash equals hash" test.
    assert sha256_hex("us").startswith("79adb2a2")
    assert sha256_hex("valéry") == h("valéry")


# --- per-field tables: input -> normalized string (hashed by hand in the test) -------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("John_Smith@gmail.com", "john_smith@gmail.com"),
        ("  Mary@Example.COM\t", "mary@example.com"),
        ("first.last+tag@sub.example.co.uk", "first.last+tag@sub.example.co.uk"),
    ],
)
def test_email(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized
    assert hashed("email", raw) == h(normalized)


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "two@@example.com", "sp ace@example.com", "@example.com"])
def test_email_invalid(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_email(raw)


@pytest.mark.parametrize(
    ("raw", "country", "normalized"),
    [
        ("+1 (312) 555-1234", None, "13125551234"),
        ("(650)555-1212", None, "16505551212"),  # national, US default
        ("650.555.1212", None, "16505551212"),
        ("1-650-555-1212", None, "16505551212"),  # NANP trunk 1
        ("16505551212", None, "16505551212"),  # already with country code
        ("00 44 20 7946 0958", None, "442079460958"),  # 00 international prefix, US default
        ("0044 20 7946 0958", "GB", "442079460958"),
        ("011 44 20 7946 0958", None, "442079460958"),  # US international prefix
        ("442079460958", None, "442079460958"),  # country code without '+'
        ("020 7946 0958", "GB", "442079460958"),  # national UK: trunk 0 dropped, 44 added
        ("020 7946 0958", "United Kingdom", "442079460958"),
        ("06 12 34 56 78", "FR", "33612345678"),
        ("+39 06 1234 5678", None, "390612345678"),  # Italian leading zero belongs to the number: kept
        ("(55) 1234 5678", "MX", "525512345678"),
        ("312-555-1234 ext. 12", None, "13125551234"),  # extension is not part of the number
        ("+1 555 987 6543", None, "15559876543"),  # 555 numbers are possible, not valid: still kept
    ],
)
def test_phone(raw: str, country: str | None, normalized: str) -> None:
    user = {"country": country} if country else {}
    assert hashed("phone", raw, **user) == h(normalized)


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("555-1234", "US"),  # no area code: local only
        ("020 7946 0958", "US"),  # national UK number, no country known
        ("12345", "US"),
        ("call me", "US"),
        ("+44 20", "US"),
    ],
)
def test_phone_invalid(raw: str, region: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_phone(raw, region)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Mary", "mary"),
        ("  MARY ", "mary"),
        ("Valéry", "valéry"),
        ("Vale\u0301ry", "valéry"),  # decomposed accent composes to the same bytes (NFC)
        ("Dr. John", "john"),
        ("Mrs Jane", "jane"),
        ("Ms. Ana-Lucía", "analucía"),
        ("Mary Ann", "maryann"),  # compound given name kept whole, without the space
        ("Dr", "dr"),  # a lone title is all we have: kept
        ("Drew", "drew"),  # not a title
        ("李", "李"),
    ],
)
def test_first_name(raw: str, normalized: str) -> None:
    assert normalize_first_name(raw) == normalized
    assert hashed("first_name", raw) == h(normalized)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Smith", "smith"),
        ("O'Brien", "obrien"),
        ("O’Brien", "obrien"),
        ("Smith-Jones", "smithjones"),
        ("Smith Jr.", "smith"),
        ("Smith, Esq.", "smith"),
        ("King III", "king"),
        ("de la Cruz", "delacruz"),
        ("Müller", "müller"),
    ],
)
def test_last_name(raw: str, normalized: str) -> None:
    assert normalize_last_name(raw) == normalized
    assert hashed("last_name", raw) == h(normalized)


@pytest.mark.parametrize("raw", ["...", "123", "--"])
def test_name_without_letters_is_invalid(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_first_name(raw)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("New York", "newyork"),
        ("St. Louis", "stlouis"),
        ("Coeur d'Alene", "coeurdalene"),
        ("São Paulo", "saopaulo"),
        ("WINSTON-SALEM", "winstonsalem"),
    ],
)
def test_city(raw: str, normalized: str) -> None:
    assert normalize_city(raw) == normalized
    assert hashed("city", raw) == h(normalized)


@pytest.mark.parametrize(
    ("raw", "country", "normalized"),
    [
        ("CA", None, "ca"),
        (" ca ", None, "ca"),
        ("California", None, "ca"),
        ("new york", None, "ny"),
        ("N.Y.", None, "ny"),
        ("District of Columbia", None, "dc"),
        ("Puerto Rico", "US", "pr"),
        ("Ontario", "CA", "ontario"),
        ("Île-de-France", "FR", "iledefrance"),
    ],
)
def test_state(raw: str, country: str | None, normalized: str) -> None:
    user = {"country": country} if country else {}
    assert hashed("state", raw, **user) == h(normalized)


def test_state_unknown_in_us_is_invalid() -> None:
    with pytest.raises(InvalidFieldError):
        normalize_state("Calif", "us")


@pytest.mark.parametrize(
    ("raw", "country", "normalized"),
    [
        ("94035", None, "94035"),
        ("94035-1234", None, "94035"),
        ("94035 1234", None, "94035"),
        ("940351234", None, "94035"),
        ("2134", None, "02134"),  # spreadsheet ate the leading zero
        ("M1 1AE", "GB", "m11ae"),
        ("SW1A 1AA", "GB", "sw1a1aa"),
        ("K1A 0B1", "CA", "k1a0b1"),
        ("00-950", "PL", "00950"),
    ],
)
def test_zip(raw: str, country: str | None, normalized: str) -> None:
    user = {"country": country} if country else {}
    assert hashed("zip", raw, **user) == h(normalized)


@pytest.mark.parametrize("raw", ["94", "ABCDE", "94035-12", "1234567", "94035-ABCD"])
def test_zip_invalid_us(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_zip(raw, "us")


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("US", "us"),
        ("us", "us"),
        ("U.S.", "us"),
        ("USA", "us"),
        ("U.S.A.", "us"),
        ("United States", "us"),
        ("united states of america", "us"),
        ("UK", "gb"),
        ("United Kingdom", "gb"),
        ("México", "mx"),
        ("DE", "de"),
    ],
)
def test_country(raw: str, normalized: str) -> None:
    assert normalize_country(raw) == normalized
    assert hashed("country", raw) == h(normalized)


@pytest.mark.parametrize("raw", ["XX", "Atlantis", "U", "123", "Europe"])
def test_country_unknown_rejected(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_country(raw)


def test_iso_list_matches_pycountry() -> None:
    assert {country.alpha_2.lower() for country in pycountry.countries} == ISO_ALPHA2


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [("Male", "m"), ("male", "m"), ("M", "m"), ("female", "f"), ("F", "f"), (" Female ", "f"), ("mujer", "f")],
)
def test_gender(raw: str, normalized: str) -> None:
    assert hashed("gender", raw) == h(normalized)


@pytest.mark.parametrize("raw", ["x", "nonbinary", "unknown", "?"])
def test_gender_other_dropped(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_gender(raw)


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("1997-02-16", "19970216"),
        ("1997/02/16", "19970216"),
        ("2/16/1997", "19970216"),  # US order
        ("02-16-1997", "19970216"),
        ("19970216", "19970216"),
        ("1997-02-16T00:00:00Z", "19970216"),
        ("16/02/1997", "19970216"),  # month 16 impossible: read day-first
        ("03/04/1997", "19970304"),  # ambiguous: US order wins
        ("February 16, 1997", "19970216"),
        ("16 Feb 1997", "19970216"),
    ],
)
def test_date_of_birth(raw: str, normalized: str) -> None:
    assert normalize_date_of_birth(raw, TODAY) == normalized
    assert hashed("date_of_birth", raw) == h(normalized)


@pytest.mark.parametrize("raw", ["2/16/97", "1899-12-31", "2027-01-01", "1997-02-30", "13/13/1997", "soon"])
def test_date_of_birth_invalid(raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        normalize_date_of_birth(raw, TODAY)


def test_external_id_is_hashed_after_trim_and_lowercase() -> None:
    assert normalize_external_id("  LIT-Contact 48213 ") == "lit-contact48213"
    result = normalize_user({"external_id": "LIT-48213"}, today=TODAY)
    assert result.user_data["external_id"] == h("lit-48213")


# --- already hashed values and unhashed keys --------------------------------------------------------------


def test_already_hashed_values_pass_through_lowercased() -> None:
    digest = h("mary@example.com")
    result = normalize_user(
        {"email": digest.upper(), "phone": digest, "first_name": digest.upper(), "country": digest},
        today=TODAY,
    )
    assert result.dropped == []
    assert result.user_data == {"em": digest, "ph": digest, "fn": digest, "country": digest}


def test_md5_looking_external_id_is_hashed_not_passed() -> None:
    # 32 hex (a UUID without dashes) is not a SHA-256: Meta needs it hashed.
    value = "0123456789abcdef0123456789abcdef"
    assert not is_sha256(value)
    assert normalize_user({"external_id": value}, today=TODAY).user_data["external_id"] == h(value)


def test_unhashed_keys_stay_clear() -> None:
    result = normalize_user(
        {
            "lead_id": 1234567890123456,
            "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",
            "fbp": "fb.1.1596403881668.1116446470",
            "client_ip_address": " 2001:DB8:0:0::1 ",
            "client_user_agent": "Mozilla/5.0 (X11)",
        },
        today=TODAY,
    )
    assert result.dropped == []
    assert result.user_data == {
        "lead_id": "1234567890123456",
        "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890",  # fbclid case kept
        "fbp": "fb.1.1596403881668.1116446470",
        "client_ip_address": "2001:db8::1",
        "client_user_agent": "Mozilla/5.0 (X11)",
    }


@pytest.mark.parametrize(
    ("function", "raw"),
    [
        (normalize_fbc, "IwAR2xYz"),  # a bare fbclid is not an fbc
        (normalize_fbc, "fb.1.abc.IwAR"),
        (normalize_fbp, "fb.1.1596403881668"),
        (normalize_ip, "999.1.1.1"),
        (normalize_ip, "localhost"),
        (normalize_lead_id, "abc123"),
        (normalize_lead_id, "123"),
    ],
)
def test_unhashed_keys_validated(function: Callable[[str], str], raw: str) -> None:
    with pytest.raises(InvalidFieldError):
        function(raw)


# --- the user block as a whole ------------------------------------------------------------------------------


def test_invalid_fields_dropped_reported_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret_email = "not-an-email-but-private"
    secret_phone = "555-0000"
    caplog.set_level(logging.DEBUG)
    result = normalize_user(
        ConversionUser(email=secret_email, phone=secret_phone, first_name="Mary", country="Atlantis"),
        today=TODAY,
    )
    assert isinstance(result, NormalizedUser)
    assert sorted(result.dropped) == ["country", "email", "phone"]
    assert result.user_data == {"fn": h("mary")}
    logged = caplog.text
    for name in ("email", "phone", "country"):
        assert name in logged
    for secret in (secret_email, secret_phone, "Atlantis", "Mary", "mary"):
        assert secret not in logged


def test_unknown_country_falls_back_to_default_for_phone() -> None:
    result = normalize_user({"phone": "(650)555-1212", "country": "Atlantis"}, today=TODAY)
    assert result.dropped == ["country"]
    assert result.user_data == {"ph": h("16505551212")}


def test_default_country_argument() -> None:
    result = normalize_user({"phone": "020 7946 0958", "zip": "M1 1AE"}, default_country="GB", today=TODAY)
    assert result.user_data == {"ph": h("442079460958"), "zp": h("m11ae")}


def test_full_user_maps_to_meta_keys() -> None:
    result = normalize_user(
        ConversionUser(
            email="Mary@Example.com",
            phone="(650)555-1212",
            first_name="Dr. Mary",
            last_name="Smith Jr.",
            city="San Francisco",
            state="California",
            zip="94105-1234",
            country="USA",
            gender="Female",
            date_of_birth="2/16/1997",
            external_id="C-1",
            lead_id="1234567890123456",
        ),
        today=TODAY,
    )
    assert result.dropped == []
    assert result.user_data == {
        "em": h("mary@example.com"),
        "ph": h("16505551212"),
        "fn": h("mary"),
        "ln": h("smith"),
        "ct": h("sanfrancisco"),
        "st": h("ca"),
        "zp": h("94105"),
        "country": h("us"),
        "ge": h("f"),
        "db": h("19970216"),
        "external_id": h("c-1"),
        "lead_id": "1234567890123456",
    }


# --- parity with the official SDK where it normalizes correctly ---------------------------------------------


def sdk_hash(field: str, value: str) -> str:
    """Hash exactly as the SDK's UserData.normalize() does: Normalize.normalize_field lowercases, trims,
    applies its per-field rule and SHA-256s (adobjects/serverside/normalize.py, user_data.py)."""
    return Normalize.normalize_field(field, value)


@pytest.mark.parametrize(
    ("field", "meta_key", "value", "user"),
    [
        ("email", "em", "John_Smith@gmail.com", {}),
        ("email", "em", "  Mary@Example.COM ", {}),
        ("city", "ct", "New York", {}),
        ("city", "ct", "St. Louis", {}),
        ("city", "ct", "menlo park", {}),
        ("country", "country", "US", {}),
        ("country", "country", " gb ", {}),
        ("gender", "ge", "f", {}),
        ("gender", "ge", "M", {}),
        ("zip", "zp", "94035", {}),
        ("zip", "zp", "94035-1234", {}),
        ("zip", "zp", "M1 1AE", {"country": "GB"}),
        ("state", "st", "CA", {}),
        ("state", "st", "ny", {}),
        ("phone", "ph", "+1 (650) 555-1212", {}),
        ("phone", "ph", "16505551212", {}),
        ("phone", "ph", "+44 20 7946 0958", {}),
        ("phone", "ph", "0044 20 7946 0958", {}),
        ("first_name", "fn", "Mary", {}),
        ("last_name", "ln", "Smith", {}),
    ],
)
def test_matches_official_sdk(field: str, meta_key: str, value: str, user: dict[str, str]) -> None:
    ours = normalize_user({field: value, **user}, today=TODAY).user_data[meta_key]
    assert ours == sdk_hash(meta_key, value)


@pytest.mark.parametrize(
    ("field", "meta_key", "value", "ours_normalized"),
    [
        ("first_name", "fn", "Dr. Mary", "mary"),  # SDK keeps punctuation and the title
        ("state", "st", "California", "ca"),  # SDK does not map full names
        ("zip", "zp", "940351234", "94035"),  # SDK does not cut to 5 digits
        ("date_of_birth", "db", "2/16/1997", "19970216"),  # SDK does not reformat
        ("phone", "ph", "(650)555-1212", "16505551212"),  # SDK cannot add a country code
    ],
)
def test_where_we_knowingly_differ_from_sdk(field: str, meta_key: str, value: str, ours_normalized: str) -> None:
    ours = normalize_user({field: value}, today=TODAY).user_data[meta_key]
    assert ours == h(ours_normalized)
    try:
        theirs = sdk_hash(meta_key, value)
    except (TypeError, ValueError):
        theirs = None
    assert ours != theirs


def test_hashed_identifiers_leave_no_personal_value_in_clear_and_keep_the_ids() -> None:
    from shared.meta.customer_data import hashed_identifiers

    user = ConversionUser(email=" Mary@Example.com ", phone="(650) 555-1212", first_name="Mary", last_name="O'Brien",
                          city="New York", state="NY", zip="10001", date_of_birth="1/2/1990", gender="female",
                          lead_id="123456789012345", external_id="ghl-contact-9", fbc="fb.1.1700000000000.abc")
    hashed, dropped = hashed_identifiers(user, default_country="US")
    assert dropped == []
    assert hashed.email == hashlib.sha256(b"mary@example.com").hexdigest()
    assert hashed.phone == hashlib.sha256(b"16505551212").hexdigest()
    assert hashed.last_name == hashlib.sha256(b"obrien").hexdigest()
    # The ids stay as given: the CRM's contact id finds the lead, and is hashed only when sent to Meta.
    assert (hashed.lead_id, hashed.external_id, hashed.fbc) == (user.lead_id, user.external_id, user.fbc)
    clear = {"mary", "example.com", "555", "o'brien", "new york", "10001", "1990", "female"}
    assert not [v for v in clear if v in hashed.model_dump_json().lower()]
    # Hashing twice changes nothing: a hash passes through.
    assert hashed_identifiers(hashed, default_country="US")[0] == hashed


def test_hashed_identifiers_drop_what_cannot_be_normalized_and_name_it() -> None:
    from shared.meta.customer_data import hashed_identifiers

    hashed, dropped = hashed_identifiers(ConversionUser(email="not an address", phone="12", lead_id="123456789012345"))
    assert set(dropped) == {"email", "phone"}
    assert (hashed.email, hashed.phone, hashed.lead_id) == (None, None, "123456789012345")
