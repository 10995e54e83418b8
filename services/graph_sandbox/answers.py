"""What a person answers on a lead form: one `field_data` item per question of *that* form, named as Meta names it
(docs/meta-api.md §7.2): a standard question by its field name (`full_name`, `email`, `phone_number`, `zip_code`,
...: `forms.STANDARD_KEYS`), a custom question by its `key`, and a multiple-choice question's answer is the chosen
option's `key` (which defaults to the option's `value`), not the text shown (§7.2). A form created through the API
gets answers to its own questions; the seeded forms ask the six seeded questions.

The person is drawn first, always with the same draws in the same order, so a seed gives the same leads whatever
the form asks; only a form's own extra questions (choices, free text) draw more.
"""

from __future__ import annotations

import random
from typing import Any

_FIRST = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Keira", "Liam", "Maya",
          "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Sam", "Tara", "Uma", "Victor", "Wen", "Yara", "Zoe"]
_LAST = ["Smith", "García", "Müller", "Nguyen", "Okafor", "Rossi", "Kowalski", "Tanaka", "Silva", "Johnson", "Brown",
         "Dubois", "Novak", "Haddad", "Larsen"]
_CITIES = [("New York", "10001", "NY"), ("Austin", "73301", "TX"), ("Denver", "80202", "CO"),
           ("Seattle", "98101", "WA"), ("Miami", "33101", "FL"), ("Chicago", "60601", "IL"), ("Boston", "02108", "MA"),
           ("Phoenix", "85001", "AZ")]
START_KEY = "when_would_you_like_to_start?"  # the seeded forms' custom question
_START = ["within_a_week", "within_a_month", "just_researching"]
_FREE_TEXT = ["Call me after 5pm", "Mostly weekends", "Not sure yet", "As soon as possible", "Email works best"]
_OTHER = {
    "country": "US", "street_address": "12 Main St", "province": "ON", "gender": "female",
    "date_of_birth": "05/14/1990", "job_title": "Office manager", "marital_status": "single",
    "relationship_status": "single", "military_status": "veteran",
}


def field_data(questions: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """A lead's answers to `questions` (a form's `questions` field)."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, zip_code, state = rng.choice(_CITIES)
    email = f"{first.lower()}.{_ascii(last).lower()}{rng.randint(1, 999)}@example.com"
    phone = f"+1{rng.randint(201, 989)}555{rng.randint(1000, 9999)}"
    known = {
        "full_name": f"{first} {last}", "first_name": first, "last_name": last, "email": email,
        "work_email": email.replace("@example.com", "@work.example.com"), "phone_number": phone,
        "work_phone_number": phone, "city": city, "zip_code": zip_code, "post_code": zip_code, "state": state,
        "company_name": f"{_ascii(last)} & Co", START_KEY: rng.choice(_START), **_OTHER,
    }
    out = []
    for question in questions:
        key = str(question["key"])
        options = question.get("options")
        if options:  # multiple choice: the chosen option's key
            value = str(rng.choice(options)["key"])
        elif key in known:
            value = known[key]
        else:
            value = rng.choice(_FREE_TEXT)
        out.append({"name": key, "values": [value]})
    return out


def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode() or "x"
