"""Shortcuts in normalization (US/Canada phones, ASCII names and places) give exactly what the general path gives."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from shared.meta.customer_data import InvalidFieldError, _nanp_phone, normalize_phone


def _full_parse(text: str, region: str) -> str | None:
    """What `normalize_phone` returns without the fast path (None: not a possible number)."""
    try:
        number = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")


def _shapes(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.choice((9, 10, 10, 11, 11, 12))))
    if rng.random() < 0.5 and len(digits) >= 10:
        digits = rng.choice("123456789") + digits[1:]
    area, rest = digits[:-7], digits[-7:]
    shape = rng.choice((
        "{a}{r}", "({a}) {r3}-{r4}", "{a}-{r3}-{r4}", "{a}.{r3}.{r4}", "+{a} {r3} {r4}", "+{a}{r}", " {a} {r} ",
        "1 ({a}) {r3}-{r4}", "+1 {a} {r}", "({a}){r3}-{r4}", "{a} {r3} {r4} ", "(+{a}) {r}", "{a}+{r}",
    ))
    return shape.format(a=area, r=rest, r3=rest[:3], r4=rest[3:])


@pytest.mark.parametrize("region", ["US", "CA", "us"])
def test_fast_path_agrees_with_phonenumbers(region: str) -> None:
    rng = random.Random(20261122)
    taken = 0
    for _ in range(20_000):
        text = _shapes(rng).strip()
        fast = _nanp_phone(text, region)
        if fast is None:
            continue
        taken += 1
        assert fast == _full_parse(text, region), text
    assert taken > 2_000  # the fast path does take the common shapes


@pytest.mark.parametrize(
    "text",
    ["312-555-0142 x12", "+44 20 7946 0958", "0044 20 7946 0958", "555-0142", "(012) 555-0142", "1-800-FLOWERS",
     "３１２５５５０１４２", "+1 (312) 555-0142 ext 5", "11 312 555 0142"],
)
def test_fast_path_stands_aside(text: str) -> None:
    assert _nanp_phone(text, "US") is None


def test_fast_path_only_for_north_america() -> None:
    assert _nanp_phone("(312) 555-0142", "GB") is None
    assert normalize_phone("(312) 555-0142", "US") == "13125550142"
    with pytest.raises(InvalidFieldError):
        normalize_phone("555-0142", "US")  # local only: still refused by the full parse


def test_ascii_shortcuts_agree_with_the_unicode_path() -> None:
    """Names, cities, states and ZIPs take a regex shortcut for ASCII text; the general path must agree."""
    import string
    import unicodedata

    from shared.meta import customer_data as normalize

    def slow_words(text: str) -> list[str]:
        composed = unicodedata.normalize("NFC", text).lower()
        return "".join(c if unicodedata.category(c)[0] in "LM" else " " for c in composed).split()

    def slow_letters(text: str, keep_digits: bool) -> str:
        allowed = string.ascii_lowercase + (string.digits if keep_digits else "")
        return "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if c in allowed)

    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + " .,'-_/()#&\t"
    for _ in range(5_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        assert normalize._name_words(text) == slow_words(text), text
        for keep in (False, True):
            assert normalize._ascii_letters(text, keep_digits=keep) == slow_letters(text, keep), text
