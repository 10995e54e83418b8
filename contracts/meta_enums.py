"""Meta's enum values for fields the contracts send, generated from the facebook-business SDK v26.0.3.

Do not edit: `make contracts` (`leadwire meta-enums`) writes this file from the installed SDK
(shared/meta/sdk_enums.py), and a unit test checks it still matches.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "AdSetBidStrategy",
    "BillingEvent",
    "CallToActionType",
    "CampaignBidStrategy",
    "CampaignObjective",
    "ObjectStatus",
    "OptimizationGoal",
    "SpecialAdCategory",
]

# Campaign `objective`: the outcome-based (ODAX) ones, all Meta accepts on new campaigns (v17+).
# SDK: Campaign.Objective
CampaignObjective = Literal[
    "OUTCOME_APP_PROMOTION",
    "OUTCOME_AWARENESS",
    "OUTCOME_ENGAGEMENT",
    "OUTCOME_LEADS",
    "OUTCOME_SALES",
    "OUTCOME_TRAFFIC",
]

# Campaign `special_ad_categories` items.
# SDK: Campaign.SpecialAdCategories
SpecialAdCategory = Literal[
    "CREDIT",
    "EMPLOYMENT",
    "FINANCIAL_PRODUCTS_SERVICES",
    "HOUSING",
    "ISSUES_ELECTIONS_POLITICS",
    "NONE",
    "ONLINE_GAMBLING_AND_GAMING",
]

# Campaign `bid_strategy`.
# SDK: Campaign.BidStrategy
CampaignBidStrategy = Literal[
    "COST_CAP",
    "LOWEST_COST_WITHOUT_CAP",
    "LOWEST_COST_WITH_BID_CAP",
    "LOWEST_COST_WITH_MIN_ROAS",
]

# Ad set `bid_strategy`.
# SDK: AdSet.BidStrategy
AdSetBidStrategy = Literal[
    "COST_CAP",
    "LOWEST_COST_WITHOUT_CAP",
    "LOWEST_COST_WITH_BID_CAP",
    "LOWEST_COST_WITH_MIN_ROAS",
]

# Ad set `optimization_goal`.
# SDK: AdSet.OptimizationGoal
OptimizationGoal = Literal[
    "ADVERTISER_SILOED_VALUE",
    "AD_RECALL_LIFT",
    "APP_INSTALLS",
    "APP_INSTALLS_AND_OFFSITE_CONVERSIONS",
    "AUTOMATIC_OBJECTIVE",
    "CONVERSATIONS",
    "DERIVED_EVENTS",
    "ENGAGED_PAGE_VIEWS",
    "ENGAGED_USERS",
    "EVENT_RESPONSES",
    "IMPRESSIONS",
    "IN_APP_VALUE",
    "LANDING_PAGE_VIEWS",
    "LEAD_GENERATION",
    "LINK_CLICKS",
    "MEANINGFUL_CALL_ATTEMPT",
    "MESSAGING_APPOINTMENT_CONVERSION",
    "MESSAGING_DEEP_CONVERSATION_AND_FOLLOW",
    "MESSAGING_PURCHASE_CONVERSION",
    "NONE",
    "OFFSITE_CONVERSIONS",
    "PAGE_LIKES",
    "POST_ENGAGEMENT",
    "PROFILE_AND_PAGE_ENGAGEMENT",
    "PROFILE_VISIT",
    "QUALITY_CALL",
    "QUALITY_LEAD",
    "REACH",
    "REMINDERS_SET",
    "SUBSCRIBERS",
    "THRUPLAY",
    "VALUE",
    "VISIT_INSTAGRAM_PROFILE",
]

# Ad set `billing_event`.
# SDK: AdSet.BillingEvent
BillingEvent = Literal[
    "APP_INSTALLS",
    "CLICKS",
    "IMPRESSIONS",
    "LINK_CLICKS",
    "LISTING_INTERACTION",
    "NONE",
    "OFFER_CLAIMS",
    "PAGE_LIKES",
    "POST_ENGAGEMENT",
    "PURCHASE",
    "THRUPLAY",
]

# `status` of campaigns, ad sets and ads.
# SDK: AdSet.Status
ObjectStatus = Literal[
    "ACTIVE",
    "ARCHIVED",
    "DELETED",
    "PAUSED",
]

# Creative `call_to_action.type`.
# SDK: AdCreativeLinkDataCallToAction.Type
CallToActionType = Literal[
    "ADD_TO_CART",
    "APPLY_NOW",
    "ASK_ABOUT_SERVICES",
    "ASK_A_QUESTION",
    "ASK_FOR_MORE_INFO",
    "ASK_US",
    "AUDIO_CALL",
    "BOOK_A_CONSULTATION",
    "BOOK_NOW",
    "BOOK_TRAVEL",
    "BROWSE_SHOP",
    "BUY",
    "BUY_ACTIVITY_TICKETS",
    "BUY_NOW",
    "BUY_TICKETS",
    "BUY_VIA_MESSAGE",
    "CALL",
    "CALL_ME",
    "CALL_NOW",
    "CHAT_NOW",
    "CHAT_WITH_US",
    "CONFIRM",
    "CONTACT",
    "CONTACT_US",
    "DONATE",
    "DONATE_NOW",
    "DOWNLOAD",
    "EVENT_RSVP",
    "FIND_A_GROUP",
    "FIND_OUT_MORE",
    "FIND_YOUR_GROUPS",
    "FOLLOW_NEWS_STORYLINE",
    "FOLLOW_PAGE",
    "FOLLOW_USER",
    "GET_A_QUOTE",
    "GET_DETAILS",
    "GET_DIRECTIONS",
    "GET_IN_TOUCH",
    "GET_OFFER",
    "GET_OFFER_VIEW",
    "GET_PROMOTIONS",
    "GET_QUOTE",
    "GET_SHOWTIMES",
    "GET_STARTED",
    "INQUIRE_NOW",
    "INSTALL_APP",
    "INSTALL_MOBILE_APP",
    "JOIN_CHANNEL",
    "JOIN_LIVE_VIDEO",
    "LEARN_MORE",
    "LIKE_PAGE",
    "LISTEN_MUSIC",
    "LISTEN_NOW",
    "MAKE_AN_APPOINTMENT",
    "MESSAGE_PAGE",
    "MOBILE_DOWNLOAD",
    "NO_BUTTON",
    "OPEN_INSTANT_APP",
    "OPEN_LINK",
    "ORDER_NOW",
    "PAY_TO_ACCESS",
    "PLAY_GAME",
    "PLAY_GAME_ON_FACEBOOK",
    "PURCHASE_GIFT_CARDS",
    "RAISE_MONEY",
    "RECORD_NOW",
    "REFER_FRIENDS",
    "REQUEST_TIME",
    "SAY_THANKS",
    "SEE_MORE",
    "SEE_SHOP",
    "SELL_NOW",
    "SEND_A_GIFT",
    "SEND_GIFT_MONEY",
    "SEND_UPDATES",
    "SHARE",
    "SHOP_NOW",
    "SHOP_WITH_AI",
    "SIGN_UP",
    "SOTTO_SUBSCRIBE",
    "START_A_CHAT",
    "START_ORDER",
    "STREAM_NOW",
    "SUBSCRIBE",
    "SWIPE_UP_PRODUCT",
    "SWIPE_UP_SHOP",
    "TRY_DEMO",
    "TRY_ON_WITH_AI",
    "UPDATE_APP",
    "USE_APP",
    "USE_MOBILE_APP",
    "VIDEO_ANNOTATION",
    "VIDEO_CALL",
    "VIEW_CART",
    "VIEW_CHANNEL",
    "VIEW_IN_CART",
    "VIEW_PRODUCT",
    "VISIT_PAGES_FEED",
    "VISIT_WEBSITE",
    "WATCH_LIVE_VIDEO",
    "WATCH_MORE",
    "WATCH_NOW",
    "WATCH_VIDEO",
    "WHATSAPP_MESSAGE",
    "WOODHENGE_SUPPORT",
]
