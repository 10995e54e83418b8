"""Normalize and hash customer information exactly as Meta matches it (docs/meta-api.md §8.3, §12.3).

Every hashed key is SHA-256 lowercase hex of the normalized UTF-8 string. A value that already is a SHA-256 digest
(64 hex, any case) passes through lowercased: the producer hashed it. `lead_id`, `fbc`, `fbp`,
`client_ip_address` and `client_user_agent` are never hashed.

Where we knowingly differ from the official Python SDK (`facebook_business/adobjects/serverside/normalize.py`):
phones are parsed with `phonenumbers` (national numbers get a country code), names and cities lose all
punctuation and spaces, US states and ZIPs are reduced to the 2-letter / 5-digit forms, dates of birth are
re-formatted to YYYYMMDD, and `external_id` is hashed (Meta recommends it; the SDK sends it raw).

Decisions (documented here because Meta's docs are silent or contradictory):
* names: Unicode NFC; lowercase; only letters and combining marks kept (so "Mary Ann" -> "maryann",
  "O'Brien" -> "obrien", "Valéry" -> "valéry"), as Meta's own capi-param-builder strips whitespace and
  punctuation. One leading title (dr, mr, mrs, ms, miss, mx, prof) is dropped from a first name and one trailing
  suffix (jr, sr, ii, iii, iv, esq, md, phd) from a last name, but only when another word remains. We do not cut
  a multi-word first name down to its first word: "Mary Ann" is often one given name.
* city / non-US state: accents are transliterated (NFKD, marks dropped) and only a-z kept; Meta asks for
  "a-z, no punctuation, no special characters, no spaces". A value with no Latin letter left is dropped.
* phone: a number without a country code takes the event's `country`, else `default_country`; "00"-prefixed
  and bare international digits are tried as international when the national reading is impossible. A number
  is kept if `phonenumbers` says it is possible (length-plausible) for its country; strict validity would drop
  real numbers on stale metadata and Meta's own 555 test vectors. Leading zeros before the country code are
  dropped; a zero that belongs to the number itself (Italy) is kept, because E.164 keeps it.
* country: ISO 3166-1 alpha-2, or a common English name / alpha-3 alias; anything else is dropped (sending a
  wrong country hash hurts every other field's match).
* US ZIP: a 3-4 digit value is left-padded to 5 (spreadsheets eat leading zeros: 02134 -> 2134).
* date of birth: ambiguous slash/dash dates are read in US order (M/D/YYYY); an impossible US reading with a
  possible D/M reading (16/02/1997) is swapped; two-digit years are rejected.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import phonenumbers

from contracts.conversions import ConversionUser

__all__ = [
    "HASHED_KEYS",
    "USER_FIELD_KEYS",
    "InvalidFieldError",
    "NormalizedUser",
    "hashed_identifiers",
    "is_sha256",
    "normalize_city",
    "normalize_country",
    "normalize_date_of_birth",
    "normalize_email",
    "normalize_external_id",
    "normalize_fbc",
    "normalize_fbp",
    "normalize_first_name",
    "normalize_gender",
    "normalize_ip",
    "normalize_last_name",
    "normalize_lead_id",
    "normalize_phone",
    "normalize_state",
    "normalize_user",
    "normalize_user_agent",
    "normalize_zip",
    "sha256_hex",
]

logger = logging.getLogger(__name__)

# Contract field -> Meta user_data key.
USER_FIELD_KEYS: dict[str, str] = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "gender": "ge",
    "date_of_birth": "db",
    "external_id": "external_id",
    "lead_id": "lead_id",
    "fbc": "fbc",
    "fbp": "fbp",
    "client_ip_address": "client_ip_address",
    "client_user_agent": "client_user_agent",
}
HASHED_KEYS = frozenset({"em", "ph", "fn", "ln", "ct", "st", "zp", "country", "ge", "db", "external_id"})

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# fb.<subdomainIndex>.<creationTimeMs>.<fbclid|random>[.<appendix>]; fbclid is case-sensitive (docs/meta-api.md §8.4).
_FB_COOKIE = re.compile(r"^fb\.[0-9]+\.[0-9]+\.\S+$")
# Meta lead ids are 15-17 digits; anything else makes Meta reject the event, and with it the whole request.
_LEAD_ID = re.compile(r"^[0-9]{15,17}$")  # ASCII only: `\d` also matches Arabic-Indic digits

ISO_ALPHA2 = frozenset(
    (
        "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW "
        "BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI "
        "FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN "
        "IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME "
        "MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF "
        "PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
        "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE "
        "YT ZA ZM ZW"
    )
    .lower()
    .split()
)

# Keys are the lowercase name with everything but a-z removed ("U.S.A." -> "usa").
_COUNTRY_ALIASES: dict[str, str] = {
    "usa": "us",
    "america": "us",
    "unitedstates": "us",
    "unitedstatesofamerica": "us",
    "theunitedstates": "us",
    "theunitedstatesofamerica": "us",
    "uk": "gb",
    "gbr": "gb",
    "unitedkingdom": "gb",
    "greatbritain": "gb",
    "britain": "gb",
    "england": "gb",
    "scotland": "gb",
    "wales": "gb",
    "northernireland": "gb",
    "can": "ca",
    "canada": "ca",
    "mex": "mx",
    "mexico": "mx",
    "mxico": "mx",
    "pri": "pr",
    "puertorico": "pr",
    "guam": "gu",
    "usvirginislands": "vi",
    "virginislandsus": "vi",
    "americansamoa": "as",
    "northernmarianaislands": "mp",
    "aus": "au",
    "australia": "au",
    "newzealand": "nz",
    "ireland": "ie",
    "irl": "ie",
    "deu": "de",
    "germany": "de",
    "fra": "fr",
    "france": "fr",
    "esp": "es",
    "spain": "es",
    "ita": "it",
    "italy": "it",
    "prt": "pt",
    "portugal": "pt",
    "nld": "nl",
    "netherlands": "nl",
    "holland": "nl",
    "belgium": "be",
    "switzerland": "ch",
    "austria": "at",
    "sweden": "se",
    "norway": "no",
    "denmark": "dk",
    "finland": "fi",
    "poland": "pl",
    "greece": "gr",
    "israel": "il",
    "ind": "in",
    "india": "in",
    "chn": "cn",
    "china": "cn",
    "jpn": "jp",
    "japan": "jp",
    "southkorea": "kr",
    "korea": "kr",
    "philippines": "ph",
    "phl": "ph",
    "vietnam": "vn",
    "brazil": "br",
    "bra": "br",
    "argentina": "ar",
    "colombia": "co",
    "col": "co",
    "peru": "pe",
    "chile": "cl",
    "venezuela": "ve",
    "ecuador": "ec",
    "guatemala": "gt",
    "honduras": "hn",
    "elsalvador": "sv",
    "slv": "sv",
    "nicaragua": "ni",
    "costarica": "cr",
    "panama": "pa",
    "cuba": "cu",
    "dominicanrepublic": "do",
    "haiti": "ht",
    "jamaica": "jm",
    "southafrica": "za",
    "nigeria": "ng",
    "egypt": "eg",
    "russia": "ru",
    "ukraine": "ua",
    "turkey": "tr",
    "turkiye": "tr",
}

_US_STATES: dict[str, str] = {
    "alabama": "al",
    "alaska": "ak",
    "arizona": "az",
    "arkansas": "ar",
    "california": "ca",
    "colorado": "co",
    "connecticut": "ct",
    "delaware": "de",
    "florida": "fl",
    "georgia": "ga",
    "hawaii": "hi",
    "idaho": "id",
    "illinois": "il",
    "indiana": "in",
    "iowa": "ia",
    "kansas": "ks",
    "kentucky": "ky",
    "louisiana": "la",
    "maine": "me",
    "maryland": "md",
    "massachusetts": "ma",
    "michigan": "mi",
    "minnesota": "mn",
    "mississippi": "ms",
    "missouri": "mo",
    "montana": "mt",
    "nebraska": "ne",
    "nevada": "nv",
    "newhampshire": "nh",
    "newjersey": "nj",
    "newmexico": "nm",
    "newyork": "ny",
    "northcarolina": "nc",
    "northdakota": "nd",
    "ohio": "oh",
    "oklahoma": "ok",
    "oregon": "or",
    "pennsylvania": "pa",
    "rhodeisland": "ri",
    "southcarolina": "sc",
    "southdakota": "sd",
    "tennessee": "tn",
    "texas": "tx",
    "utah": "ut",
    "vermont": "vt",
    "virginia": "va",
    "washington": "wa",
    "westvirginia": "wv",
    "wisconsin": "wi",
    "wyoming": "wy",
    "districtofcolumbia": "dc",
    "washingtondc": "dc",
    "puertorico": "pr",
    "guam": "gu",
    "virginislands": "vi",
    "usvirginislands": "vi",
    "americansamoa": "as",
    "northernmarianaislands": "mp",
}
# States, DC, territories and the military "states" (armed forces Americas/Europe/Pacific).
_US_STATE_CODES = frozenset(_US_STATES.values()) | {"aa", "ae", "ap"}

_FIRST_NAME_TITLES = frozenset({"dr", "mr", "mrs", "ms", "miss", "mx", "prof"})
_LAST_NAME_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "esq", "md", "phd"})

_GENDERS: dict[str, str] = {
    "m": "m",
    "male": "m",
    "man": "m",
    "masculino": "m",
    "hombre": "m",
    "f": "f",
    "female": "f",
    "woman": "f",
    "femenino": "f",
    "mujer": "f",
}

_DOB_TEXT_FORMATS = ("%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y")


class InvalidFieldError(ValueError):
    """A customer value cannot be normalized. The message names the field, never the value."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field_name = field_name
        self.reason = reason


@dataclass(frozen=True)
class NormalizedUser:
    """Meta `user_data` (Meta keys, hashed where Meta requires) plus the contract fields that were dropped."""

    user_data: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def sha256_hex(text: str) -> str:
    """SHA-256 of the UTF-8 bytes, lowercase hex (how Meta wants every hashed key)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(value: str) -> bool:
    """True if the value already is a SHA-256 digest (64 hex characters, either case)."""
    return bool(_SHA256.match(value.strip()))


def _letters_only(text: str) -> str:
    """Keep Unicode letters and combining marks (names keep é, ñ, 李), NFC-composed, lowercased."""
    composed = unicodedata.normalize("NFC", text).lower()
    return "".join(char for char in composed if unicodedata.category(char)[0] in "LM")


_NOT_AZ = re.compile(r"[^a-z]+")
_AZ_WORD = re.compile(r"[a-z]+")
_NOT_AZ09 = re.compile(r"[^a-z0-9]+")


def _ascii_letters(text: str, *, keep_digits: bool = False) -> str:
    """Transliterate accents (São -> sao) and keep a-z (and 0-9 if asked)."""
    if text.isascii():  # the common case, without decomposing character by character
        return (_NOT_AZ09 if keep_digits else _NOT_AZ).sub("", text.lower())
    decomposed = unicodedata.normalize("NFKD", text.lower())
    allowed = "abcdefghijklmnopqrstuvwxyz" + ("0123456789" if keep_digits else "")
    return "".join(char for char in decomposed if char in allowed)


def _name_words(text: str) -> list[str]:
    if text.isascii():  # ASCII letters are exactly a-z once lowercased
        return _AZ_WORD.findall(text.lower())
    composed = unicodedata.normalize("NFC", text).lower()
    spaced = "".join(char if unicodedata.category(char)[0] in "LM" else " " for char in composed)
    return spaced.split()


def normalize_email(value: str) -> str:
    """Trim and lowercase; reject anything that is not something@something.something."""
    text = value.strip().lower()
    if not _EMAIL.match(text):
        raise InvalidFieldError("email", "not an e-mail address")
    return text


def _possible(number: phonenumbers.PhoneNumber) -> bool:
    # IS_POSSIBLE_LOCAL_ONLY (a 7-digit US number without area code) is not enough to match anyone.
    reason = phonenumbers.is_possible_number_with_reason(number)
    return reason == phonenumbers.ValidationResult.IS_POSSIBLE


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None


_NANP_REGIONS = frozenset({"us", "ca"})
_NANP_CHARS = frozenset("0123456789 ()-.+")
_NANP_AREA_START = frozenset("23456789")


def _nanp_phone(text: str, region: str) -> str | None:
    """The common case without `phonenumbers` (a parse costs ~30 µs): a plainly formatted US/Canada number.

    Only ASCII digits, spaces, `()-.` and a leading `+`; ten digits starting 2-9 (an area code), or those after a
    `1`. `phonenumbers` reads exactly these as country code 1 plus the ten digits, a possible number
    (`tests/unit/test_capi_normalize_fast_paths.py` checks the two agree). Anything else returns None: the full
    parse decides.
    """
    if region.lower() not in _NANP_REGIONS or not _NANP_CHARS.issuperset(text) or "+" in text[1:]:
        return None
    digits = "".join(char for char in text if char in "0123456789")
    if len(digits) == 10 and digits[0] in _NANP_AREA_START and not text.startswith("+"):
        return "1" + digits
    if len(digits) == 11 and digits[0] == "1" and digits[1] in _NANP_AREA_START:
        return digits
    return None


def normalize_phone(value: str, region: str = "US") -> str:
    """Digits with country code, no '+' and no leading zeros (E.164 without the plus).

    Args:
        value: the phone as the CRM wrote it.
        region: ISO alpha-2 country used when the number has no country code.
    """
    text = value.strip()
    fast = _nanp_phone(text, region)
    if fast is not None:
        return fast
    digits = "".join(char for char in text if char.isdigit())
    if len(digits) < 6:
        raise InvalidFieldError("phone", "too few digits")
    national = _parse(text, region.upper())
    if national is not None and _possible(national):
        return phonenumbers.format_number(national, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
    # Not a national number of `region`: try "00 44 ..." (the international prefix used outside North America)
    # and "44 20 ..." (country code without the plus). A single leading 0 is a trunk prefix: no country code.
    candidate = None
    if not text.startswith("+"):
        candidate = digits.lstrip("0") if digits.startswith("00") else None if digits.startswith("0") else digits
    international = _parse("+" + candidate, None) if candidate else None
    if international is not None and _possible(international):
        return phonenumbers.format_number(international, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
    raise InvalidFieldError("phone", "not a possible phone number for its country")


def _name(value: str, field_name: str, strip_words: frozenset[str], *, leading: bool) -> str:
    words = _name_words(value)
    if len(words) > 1:
        edge = 0 if leading else -1
        if words[edge] in strip_words:
            del words[edge]
    normalized = "".join(words)
    if not normalized:
        raise InvalidFieldError(field_name, "no letters")
    return normalized


def normalize_first_name(value: str) -> str:
    """Lowercase letters only (UTF-8 kept), no punctuation or spaces; a leading title (Dr., Mrs.) dropped."""
    return _name(value, "first_name", _FIRST_NAME_TITLES, leading=True)


def normalize_last_name(value: str) -> str:
    """Lowercase letters only (UTF-8 kept), no punctuation or spaces; a trailing suffix (Jr., Esq.) dropped."""
    return _name(value, "last_name", _LAST_NAME_SUFFIXES, leading=False)


def normalize_city(value: str) -> str:
    """Lowercase a-z, accents transliterated, no punctuation, digits or spaces ("New York" -> "newyork")."""
    normalized = _ascii_letters(value)
    if not normalized:
        raise InvalidFieldError("city", "no latin letters")
    return normalized


def normalize_state(value: str, country: str = "us") -> str:
    """US: 2-letter ANSI code, full names mapped ("California" -> "ca"). Elsewhere: lowercase a-z only."""
    normalized = _ascii_letters(value)
    if not normalized:
        raise InvalidFieldError("state", "no latin letters")
    if country.lower() != "us":
        return normalized
    if normalized in _US_STATE_CODES:
        return normalized
    if normalized in _US_STATES:
        return _US_STATES[normalized]
    raise InvalidFieldError("state", "not a US state or territory")


def normalize_zip(value: str, country: str = "us") -> str:
    """US: five digits (ZIP+4 cut, lost leading zeros restored). Elsewhere: lowercase, letters and digits only."""
    if country.lower() != "us":
        normalized = _ascii_letters(value, keep_digits=True)
        if not normalized:
            raise InvalidFieldError("zip", "empty")
        return normalized
    compact = re.sub(r"\s", "", value)
    head, separator, tail = compact.partition("-")
    if separator and not (tail.isdigit() and len(tail) == 4):
        raise InvalidFieldError("zip", "not a US ZIP or ZIP+4")
    if not separator and len(head) == 9:
        head = head[:5]
    if not head.isdigit() or not 3 <= len(head) <= 5:
        raise InvalidFieldError("zip", "not a US ZIP or ZIP+4")
    return head.zfill(5)


def normalize_country(value: str) -> str:
    """ISO 3166-1 alpha-2 lowercase; common names and alpha-3 codes mapped ("U.S.A." -> "us")."""
    key = _ascii_letters(value)
    if len(key) == 2 and key in ISO_ALPHA2:
        return key
    if key in _COUNTRY_ALIASES:
        return _COUNTRY_ALIASES[key]
    raise InvalidFieldError("country", "not an ISO 3166-1 alpha-2 code or known country name")


def normalize_gender(value: str) -> str:
    """`m` or `f`; anything else cannot be sent (Meta knows only these two)."""
    key = _ascii_letters(value)
    if key not in _GENDERS:
        raise InvalidFieldError("gender", "not recognisable as m or f")
    return _GENDERS[key]


def normalize_date_of_birth(value: str, today: date | None = None) -> str:
    """YYYYMMDD from YYYY-MM-DD, YYYYMMDD, M/D/YYYY (US order), "February 16, 1997"; year 1900..today."""
    today = today or datetime.now(UTC).date()
    text = value.strip()
    iso = re.match(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$", text)
    groups = list(iso.groups()) if iso else re.findall(r"\d+", text)
    parsed: date | None = None
    try:
        if len(groups) == 1 and len(groups[0]) == 8:
            token = groups[0]
            parsed = date(int(token[:4]), int(token[4:6]), int(token[6:]))
        elif len(groups) == 3 and len(groups[0]) == 4:
            parsed = date(int(groups[0]), int(groups[1]), int(groups[2]))
        elif len(groups) == 3 and len(groups[2]) == 4 and re.match(r"^[\d\s/.\-]+$", text):
            month, day, year = int(groups[0]), int(groups[1]), int(groups[2])
            if month > 12 >= day:
                month, day = day, month
            parsed = date(year, month, day)
        else:
            cleaned = re.sub(r"[,.]", " ", text)
            cleaned = " ".join(cleaned.split())
            for pattern in _DOB_TEXT_FORMATS:
                try:
                    parsed = datetime.strptime(cleaned, pattern).date()
                    break
                except ValueError:
                    continue
    except ValueError:
        parsed = None
    if parsed is None:
        raise InvalidFieldError("date_of_birth", "unrecognised date format")
    if parsed.year < 1900 or parsed > today:
        raise InvalidFieldError("date_of_birth", "outside 1900..today")
    return parsed.strftime("%Y%m%d")


def normalize_external_id(value: str) -> str:
    """Trim, lowercase and drop whitespace (as Meta's capi-param-builder does), ready to hash."""
    normalized = "".join(value.lower().split())
    if not normalized:
        raise InvalidFieldError("external_id", "empty")
    return normalized


def normalize_lead_id(value: str) -> str:
    """Meta lead id, digits only, unhashed: a malformed id makes Meta reject the event (and its request)."""
    text = value.strip()
    if not _LEAD_ID.match(text):
        raise InvalidFieldError("lead_id", "not a Meta lead id (15-17 digits)")
    return text


def normalize_fbc(value: str) -> str:
    """Kept byte for byte (fbclid is case-sensitive); only the fb.N.TIME.VALUE shape is checked."""
    text = value.strip()
    if not _FB_COOKIE.match(text):
        raise InvalidFieldError("fbc", "not fb.<index>.<ms>.<fbclid>")
    return text


def normalize_fbp(value: str) -> str:
    """Kept as given; only the fb.N.TIME.VALUE shape is checked."""
    text = value.strip()
    if not _FB_COOKIE.match(text):
        raise InvalidFieldError("fbp", "not fb.<index>.<ms>.<random>")
    return text


def normalize_ip(value: str) -> str:
    """A parseable IPv4 or IPv6 address, in its canonical text form."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise InvalidFieldError("client_ip_address", "not an IP address") from None


def normalize_user_agent(value: str) -> str:
    """Sent raw; only emptiness and control characters are rejected."""
    text = value.strip()
    if not text or any(unicodedata.category(char) == "Cc" for char in text):
        raise InvalidFieldError("client_user_agent", "empty or has control characters")
    return text


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text or None


# Normalizers that need nothing but the value (phone, state, ZIP and date of birth also take country / today).
_PLAIN_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "email": normalize_email,
    "first_name": normalize_first_name,
    "last_name": normalize_last_name,
    "city": normalize_city,
    "country": normalize_country,
    "gender": normalize_gender,
    "external_id": normalize_external_id,
    "lead_id": normalize_lead_id,
    "fbc": normalize_fbc,
    "fbp": normalize_fbp,
    "client_ip_address": normalize_ip,
    "client_user_agent": normalize_user_agent,
}


def normalize_user(
    user: ConversionUser | Mapping[str, object],
    *,
    default_country: str = "US",
    today: date | None = None,
) -> NormalizedUser:
    """Normalize and hash every customer field; drop (and report) the ones that cannot be normalized.

    Args:
        user: the contract's user block, or a mapping with the same field names (unknown keys are ignored).
        default_country: country assumed for national phone numbers, states and ZIPs when `country` is absent,
            hashed or invalid.
        today: the reference date for date-of-birth checks (injected for tests).
    """
    raw: Mapping[str, object] = user.__dict__ if isinstance(user, ConversionUser) else user  # no model_dump
    values: dict[str, str] = {}
    for name in USER_FIELD_KEYS:
        value = raw.get(name)
        if value is not None and (text := _as_text(value)) is not None:
            values[name] = text
    user_data: dict[str, str] = {}
    dropped: list[str] = []

    def drop(name: str, reason: str) -> None:
        # Never the value: the field name and why is all a reader of the logs gets.
        logger.warning("dropping customer field %s: %s", name, reason, extra={"field": name})
        dropped.append(name)

    context = default_country.lower()
    country = values.get("country")
    if country is not None and not is_sha256(country):
        try:
            context = normalize_country(country)
        except InvalidFieldError as exc:
            drop("country", exc.reason)
            del values["country"]

    for name, text in values.items():
        key = USER_FIELD_KEYS[name]
        hashed = key in HASHED_KEYS
        if hashed and len(text) == 64 and is_sha256(text):
            user_data[key] = text.lower()
            continue
        try:
            if name in _PLAIN_NORMALIZERS:
                normalized = _PLAIN_NORMALIZERS[name](text)
            elif name == "phone":
                normalized = normalize_phone(text, context)
            elif name == "state":
                normalized = normalize_state(text, context)
            elif name == "zip":
                normalized = normalize_zip(text, context)
            else:  # date_of_birth
                normalized = normalize_date_of_birth(text, today)
        except InvalidFieldError as exc:
            drop(name, exc.reason)
            continue
        user_data[key] = sha256_hex(normalized) if hashed else normalized
    return NormalizedUser(user_data=user_data, dropped=dropped)


def hashed_identifiers(user: ConversionUser, *, default_country: str = "US") -> tuple[ConversionUser, list[str]]:
    """The user block as it may travel on: every personal field Meta hashes (e-mail, phone, names, address, gender,
    birth date) replaced by its hash (normalized by the rules above), the ones that cannot be normalized removed
    and named in the list; the ids (`lead_id`, `external_id`: the CRM's contact id, which finds the lead, hashed
    only when sent to Meta), `fbc`, `fbp`, the IP and the user agent as given. What a process that receives
    customer data in clear (the ingress) publishes, so that no clear identifier reaches the broker; the hashes
    still match stored leads (`shared.leads.email_key`, `phone_key`)."""
    normalized = normalize_user(user, default_country=default_country)
    personal = {name: key for name, key in USER_FIELD_KEYS.items() if key in HASHED_KEYS and key != "external_id"}
    update = {name: normalized.user_data.get(key) for name, key in personal.items()}
    dropped = [name for name in normalized.dropped if name in personal]
    return user.model_copy(update=update), dropped
