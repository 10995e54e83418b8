"""Customer-file rows for Meta: normalized and SHA-256 hashed per key (docs/meta-api.md §12.3), in 10,000-row batches.

Normalization is shared with the CAPI sender (`shared/meta/customer_data.py`), so a person hashes the same way in
conversions and in audiences. Audience-only keys are derived here: DOBY/DOBM/DOBD from a date of birth, FI from
the normalized first name. A value already in SHA-256 hex passes through lowercased; EXTERN_ID and MADID are
sent unhashed (trimmed; MADID lowercased). A value that cannot be normalized becomes `""` (unknown), never a
hash of garbage: a wrong hash cannot match anyone but still costs the row's other keys nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from shared.meta.customer_data import (
    InvalidFieldError,
    is_sha256,
    normalize_city,
    normalize_country,
    normalize_email,
    normalize_first_name,
    normalize_gender,
    normalize_last_name,
    normalize_phone,
    normalize_state,
    normalize_zip,
    sha256_hex,
)

MAX_ROWS_PER_REQUEST = 10_000  # docs/meta-api.md §12.2
UNHASHED_KEYS = frozenset({"EXTERN_ID", "MADID"})
# A row can match a person only with one of these, or with a name (last name and first name or initial) plus
# where or when (zip, city, state, date of birth). Rows with neither (all empty, or only gender/country) are not
# sent: Meta would count them in num_invalid_entries and they can match no one.
IDENTIFYING_KEYS = frozenset({"EMAIL", "PHONE", "MADID", "EXTERN_ID"})
NAME_CONTEXT_KEYS = frozenset({"ZIP", "CT", "ST", "DOBY"})


def _digits(width: int) -> Callable[[str, str], str]:
    """DOBY (4 digits), DOBM / DOBD (2 digits, zero-padded)."""

    def part(value: str, _country: str) -> str:
        digits = "".join(ch for ch in value if ch.isdigit())
        if not digits or len(digits) > width:
            raise InvalidFieldError("date_of_birth", f"expected up to {width} digits")
        if width == 4 and len(digits) != 4:
            raise InvalidFieldError("date_of_birth", "expected a 4-digit year")
        return digits.zfill(width)

    return part


def _first_initial(value: str, _country: str) -> str:
    return normalize_first_name(value)[:1]


_NORMALIZERS: dict[str, Callable[[str, str], str]] = {
    "EMAIL": lambda v, _c: normalize_email(v),
    "PHONE": lambda v, c: normalize_phone(v, c.upper()),
    "FN": lambda v, _c: normalize_first_name(v),
    "LN": lambda v, _c: normalize_last_name(v),
    "FI": _first_initial,
    "CT": lambda v, _c: normalize_city(v),
    "ST": lambda v, c: normalize_state(v, c),
    "ZIP": lambda v, c: normalize_zip(v, c),
    "COUNTRY": lambda v, _c: normalize_country(v),
    "GEN": lambda v, _c: normalize_gender(v),
    "DOBY": _digits(4),
    "DOBM": _digits(2),
    "DOBD": _digits(2),
}


@dataclass(frozen=True)
class PreparedRows:
    """Rows ready for Meta, plus counts for the audit log (no values)."""

    rows: list[list[str]]  # the rows to send: each has a usable identifier
    values_hashed: int
    values_passed_through: int
    values_dropped: int
    rows_dropped: int = 0  # rows left out: no usable identifier after normalization

    @property
    def digest(self) -> str:
        """SHA-256 over the prepared rows: lets the audit log tell two uploads apart without keeping them."""
        h = hashlib.sha256()
        for row in self.rows:
            h.update("\x1f".join(row).encode())
            h.update(b"\x1e")
        return h.hexdigest()


def prepare_value(key: str, value: str, country: str) -> tuple[str, str]:
    """One value as Meta wants it, and what happened: `hashed`, `passed` (already hashed / unhashed key), `dropped`."""
    text = value.strip()
    if not text:
        return "", "dropped"
    if key in UNHASHED_KEYS:
        return (text.lower() if key == "MADID" else text), "passed"
    if is_sha256(text):
        return text.lower(), "passed"
    normalizer = _NORMALIZERS.get(key)
    try:
        normalized = normalizer(text, country) if normalizer else text.lower()
    except InvalidFieldError:
        return "", "dropped"
    return sha256_hex(normalized), "hashed"


def has_identifier(schema: Sequence[str], prepared: Sequence[str]) -> bool:
    """Whether a prepared row can identify a person (see IDENTIFYING_KEYS)."""
    present = {key for key, value in zip(schema, prepared, strict=True) if value}
    if present & IDENTIFYING_KEYS:
        return True
    return "LN" in present and bool(present & {"FN", "FI"}) and bool(present & NAME_CONTEXT_KEYS)


def prepare_row(schema: Sequence[str], row: Sequence[str], default_country: str,
                counts: dict[str, int] | None = None) -> list[str]:
    """One row normalized and hashed; its COUNTRY column (if any) drives its phone/state/zip rules."""
    country = default_country
    if "COUNTRY" in schema:
        given = row[list(schema).index("COUNTRY")]
        if given.strip():
            try:
                country = normalize_country(given)
            except InvalidFieldError:
                country = default_country
    prepared = []
    for key, value in zip(schema, row, strict=True):
        text, what = prepare_value(key, value, country)
        if counts is not None:
            counts[what] += 1
        prepared.append(text)
    return prepared


def prepare_rows(schema: Sequence[str], rows: Sequence[Sequence[str]], default_country: str) -> PreparedRows:
    """Normalize and hash every value (`prepare_row`). Rows without a usable identifier afterwards are left out
    (counted in `rows_dropped`)."""
    out: list[list[str]] = []
    counts = {"hashed": 0, "passed": 0, "dropped": 0}
    for row in rows:
        prepared = prepare_row(schema, row, default_country, counts)
        if has_identifier(schema, prepared):
            out.append(prepared)
    return PreparedRows(out, counts["hashed"], counts["passed"], counts["dropped"], rows_dropped=len(rows) - len(out))


def request_chunks(rows: Sequence[list[str]], size: int = MAX_ROWS_PER_REQUEST) -> Iterator[list[list[str]]]:
    for start in range(0, len(rows), size):
        yield list(rows[start:start + size])
