"""Value rules every contract shares: ids are ASCII digits, numbers are finite, epochs are plausible.

`\\d` in a pydantic pattern matches any Unicode digit (Arabic-Indic `١٢٣`, fullwidth `１２３`), which Python's
`int()` then happily parses: ids that look like Meta's but are not. Patterns here spell `[0-9]`. Non-finite
numbers (`1e400` parses as infinity, `NaN`, `Infinity`) are no value any database column or JSON document can
hold: typed float fields refuse them through `allow_inf_nan=False` in the models' config, free-form fields
(`dict[str, Any]`, extra keys) through `check_finite`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Meta object ids: 1 to 32 ASCII digits.
DIGITS = r"^[0-9]{1,32}$"
DIGITS_25 = r"^[0-9]{1,25}$"
ACT_ID = r"^act_[0-9]{1,25}$"
# Unix seconds a message may carry: from 1970 up to 2100-01-01. A millisecond value (1.7e12) or 1e20 is a
# producer's bug, refused here rather than crashing whoever turns it into a date.
MAX_UNIX_SECONDS = 4_102_444_800


def check_finite(value: Any, path: str = "") -> Any:
    """`value` unchanged, or ValueError naming where a non-finite number is (never the value)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path or 'value'}: must be a finite number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_finite(item, f"{path}[{index}]")
    return value
