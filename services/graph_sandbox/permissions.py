"""The permissions a call needs from its token, and Meta's refusal when one is missing.

Meta refuses a call whose token lacks a permission with a permission error, code `10` or `200`-`299`, never retried
(shared/docs/meta-api-facts.md §4.2, §4.4: "`200` Permissions error"). Without this check the sandbox would be
kinder than Meta: a token without `leads_retrieval` would still read leads. Every token the sandbox knows (the
system user's and the Page tokens derived from it) carries the grants of the one sandbox token (`state.token`,
what `debug_token` shows), as a Page token carries the permissions of the user it was read with.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .errors import GraphError

ADS_KINDS = frozenset({"adaccount", "campaign", "adset", "ad", "adcreative", "adimage", "customaudience",
                       "report_run"})


@dataclass(frozen=True)
class Need:
    """What one family of calls needs: every scope of `all_of`, and one of `any_of` when given."""

    all_of: tuple[str, ...] = ()
    any_of: tuple[str, ...] = ()
    code: int = 200
    message: str = "(#200) Requires {missing} permission to manage the object"

    def missing(self, granted: Iterable[str]) -> list[str]:
        have = set(granted)
        gaps = [s for s in self.all_of if s not in have]
        if self.any_of and not have & set(self.any_of):
            gaps.append(" or ".join(self.any_of))
        return gaps

    def check(self, granted: Iterable[str]) -> None:
        """Raise Meta's permission error naming what is missing; nothing when the token has it all."""
        gaps = self.missing(granted)
        if gaps:
            raise GraphError(self.message.format(missing=", ".join(gaps)), code=self.code, is_transient=False)


# Reading leads: `leads_retrieval` and `pages_manage_ads` (meta-api-facts.md §7.1, §7.3 [S23]).
LEADS = Need(all_of=("leads_retrieval", "pages_manage_ads"))
# Lead forms (listing, creating, reading one): `pages_manage_ads` and `pages_show_list`. The facts name no set for
# forms; these are the Page permissions §7.1 lists next to lead reads, and a form is the Page's ads object.
FORMS = Need(all_of=("pages_manage_ads", "pages_show_list"))
# Installing the app for `leadgen` on a Page: the five permissions of §6.5 [S22]; reading or removing the install
# is a Page-metadata call (`pages_manage_metadata`, `pages_show_list`).
SUBSCRIBE = Need(all_of=("leads_retrieval", "pages_manage_metadata", "pages_show_list", "pages_read_engagement",
                         "ads_management"))
SUBSCRIPTIONS = Need(all_of=("pages_manage_metadata", "pages_show_list"))
# Reading a Page (its fields, its access token): `pages_read_engagement` (§6.5, §7.1), refused with code 10 (§4.2
# lists 10 as a permission code). The facts give codes, not wording: the messages here are Meta's as commonly seen.
PAGE_READ = Need(all_of=("pages_read_engagement",), code=10,
                 message="(#10) This endpoint requires the '{missing}' permission or the 'Page Public Content "
                         "Access' feature")
# Ad objects: writes need `ads_management` (§6.6, §7.1); reads (insights and report runs included) take it or
# `ads_read`, the read-only permission leadwire's token holds for insights (README, shared/doctor.py).
ADS_READ = Need(any_of=("ads_read", "ads_management"),
                message="(#200) Ad account owner has NOT grant ads_management or ads_read permission")
ADS_WRITE = Need(all_of=("ads_management",))

ANY = None
# (node kinds, edges ("" = the node itself), methods) -> Need; the first rule that matches applies, None = any.
RULES: tuple[tuple[frozenset[str] | None, frozenset[str] | None, frozenset[str] | None, Need], ...] = (
    (frozenset({"lead"}), ANY, ANY, LEADS),
    (ANY, frozenset({"leads"}), ANY, LEADS),
    (frozenset({"page"}), frozenset({"subscribed_apps"}), frozenset({"POST"}), SUBSCRIBE),
    (frozenset({"page"}), frozenset({"subscribed_apps"}), ANY, SUBSCRIPTIONS),
    (frozenset({"page"}), frozenset({"leadgen_forms"}), ANY, FORMS),
    (frozenset({"leadgen_form"}), ANY, ANY, FORMS),
    (frozenset({"page"}), frozenset({""}), ANY, PAGE_READ),
    (ADS_KINDS, frozenset({"insights"}), ANY, ADS_READ),
    (ADS_KINDS, ANY, frozenset({"GET"}), ADS_READ),
    (ADS_KINDS, ANY, ANY, ADS_WRITE),
)


def need_for(kind: str, edge: str | None, method: str) -> Need | None:
    """The permissions a call on `kind`/`edge` needs; None when the sandbox does not model them (pixels, CAPI)."""
    for kinds, edges, methods, need in RULES:
        if (kinds is None or kind in kinds) and (edges is None or (edge or "") in edges) and (
                methods is None or method in methods):
            return need
    return None
