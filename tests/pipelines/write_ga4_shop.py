"""Writes tests/pipelines/ga4_shop/: a week of a small web shop's GA4 export, as `bq extract` writes it.

`python tests/pipelines/write_ga4_shop.py` rewrites the folder; tests/pipelines/test_local_run_ga4_shop.py checks that
the files are what this script writes, then runs `make pipeline-run SOURCE=ga4:tests/pipelines/ga4_shop` on them.

Why not the synthetic shop (components/warehouse/synthetic.py, ga4.write_export): those rows are the contract tables
turned into GA4's shape, one user id per user and a page_view beside each view, so they only hold what the contract
already holds. These rows are written here, story by story, the way GA4's gtag/GTM ecommerce tags log a real
visit, with what that brings along:
- one row per event, `event_timestamp` in microseconds (INT64 as a JSON string, as `bq extract` writes INT64),
  `event_date` the property's local day (America/Los_Angeles, UTC-8 in this week) that names the daily file, so a
  late evening visit runs over two files with one `ga_session_id`;
- `event_params` with `ga_session_id` (the session's start, unix seconds), `ga_session_number`, `page_location`,
  `page_title`, `engagement_time_msec`; device, geo and traffic_source records, which the extract does not read;
- every session starts with `session_start` (and a new user's first with `first_visit`), a `page_view` per page,
  and a `page_view` before each product's `view_item`; the cart and checkout pages log `view_cart` and
  `begin_checkout` (items, no event type of the contract); a category page (a page_view too) logs `view_item_list`
  with four items and their `item_list_index`, the home page of a returning visitor a `view_promotion`: all are dropped by name;
- `items` arrays with item_id, item_name, item_brand, item_variant, item_category, price, quantity, item_list_index
  (`(not set)` outside a list, as GA4 writes it); a purchase holds the two items bought, with `ecommerce` totals;
  non-ecommerce rows carry `items: []`, as the export writes an empty REPEATED field;
- `user_pseudo_id` is `<random>.<first visit seconds>`; `user_id` is set only on the events after a `login`, so the
  signed-in shoppers browse anonymously first (the extract stitches those rows to their user_id).

The stories (each shopper's items are four neighbours in one category, items `s..s+3` of category `u % 5` with
`s = (u // 5) % 5`, so each category's eight items are all used and a next item is guessable from the last):
- buyers, u 0-9, never sign in. Day 1: views a, b, c, cart b. Day 2: view d, cart d, purchase b+d.
  8 contract events, 20 export rows each.
- wishers, u 10-19. Day 1: views a, b, wishlist b. Day 3: promotion, views c, d, cart c.
  6 contract events, 18 rows each.
- signed-in buyers, u 20-29: the buyers' story, with a `login` on day 2 after the view of d.
  8 contract events, 21 rows each, the first 5 ecommerce rows without user_id.
- 4 visitors from an ad who bounce after 1, 2, 1, 2 product views (5, 7, 5, 7 rows): below the pipeline's
  min_events_per_user of 3, dropped by the contract queries (`user_below_min_events`, 6 events).
- 4 bad rows: a view_item whose tag fired before the data layer was ready (`items: []`: no_items), one of a
  visitor who refused analytics cookies (consent mode: no user_pseudo_id, no user_id: no_user_id), one whose only
  item has a name but `item_id` `(not set)` (no_item_id), and buyer 7's view of c exported twice (duplicate_row).

Hand-computed from the stories (the test holds these numbers): 200 + 180 + 210 + 24 + 4 = 618 export rows, of which
210 ecommerce rows (view_item 130, add_to_cart 50, add_to_wishlist 10, purchase 20) and, dropped by name,
page_view 220, session_start 64, first_visit 34, view_item_list 30, view_cart 20, begin_checkout 20, login 10,
view_promotion 10. Kept: 210 - 2 rows = 208, one event per item (the 20 purchases hold two: +20, the `(not set)`
item none: -1) = 227 events, less 1 duplicate and 6 bouncer events = 220 events (80 + 60 + 80) of 30 users on 40
items; 50 rows stitched; 2 kept rows share a user and a timestamp (the duplicate); 30 * 4 + 10 = 130 list items.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

FOLDER = Path(__file__).parent / "ga4_shop"
LOS_ANGELES = dt.timezone(dt.timedelta(hours=-8))  # the property's time zone (PST until 10 March 2024)
MONDAY = int(dt.datetime(2024, 3, 4, tzinfo=LOS_ANGELES).timestamp())  # the week's first local midnight
STREAM_ID = "4180394713"
HOST = "https://shop.example-outfitters.com"

# (item_id, item_name, item_brand, price); a brand of "(not set)" is how GA4 writes a tag that sent none.
CATALOGUE = {
    "Apparel": [
        ("GGOEGXXX1201", "Google Crewneck Tee Navy", "Google", 22.0),
        ("GGOEGXXX1202", "Google Heathered Hoodie", "Google", 55.0),
        ("GGOEGXXX1203", "Google Campus Tee Sage", "Google", 24.0),
        ("GGOEYXXX1204", "YouTube Zip Fleece", "YouTube", 64.0),
        ("GGOEGXXX1205", "Google Packable Rain Shell", "Google", 78.0),
        ("GGOEAXXX1206", "Android Beanie Charcoal", "Android", 18.0),
        ("GGOEGXXX1207", "Google Crew Sock 3-Pack", "Google", 16.0),
        ("GGOEGXXX1208", "Google Trucker Cap", "Google", 25.0),
    ],
    "Drinkware": [
        ("GGOEGDWA2101", "Google Camp Mug Ivory", "Google", 14.0),
        ("GGOEGDWA2102", "Google Insulated Bottle 24oz", "Google", 32.0),
        ("GGOEGDWA2103", "Google Tumbler 16oz", "Google", 28.0),
        ("GGOEYDWA2104", "YouTube Ceramic Mug", "YouTube", 15.0),
        ("GGOEADWA2105", "Android Glass Bottle", "Android", 26.0),
        ("GGOEGDWA2106", "Google Espresso Cup Set", "Google", 30.0),
        ("GGOEGDWA2107", "Google Travel Mug", "Google", 24.0),
        ("GGOEGDWA2108", "Google Kids Water Bottle", "Google", 18.0),
    ],
    "Bags": [
        ("GGOEGBAG3101", "Google Commuter Backpack", "Google", 89.0),
        ("GGOEGBAG3102", "Google Canvas Tote Natural", "Google", 21.0),
        ("GGOEYBAG3103", "YouTube Sling Bag", "YouTube", 42.0),
        ("GGOEGBAG3104", 'Google Laptop Sleeve 13"', "Google", 35.0),
        ("GGOEGBAG3105", "Google Weekender Duffel", "Google", 110.0),
        ("GGOEABAG3106", "Android Drawstring Bag", "Android", 12.0),
        ("GGOEGBAG3107", "Google Insulated Lunch Bag", "Google", 27.0),
        ("GGOEGBAG3108", "Google Packable Daypack", "Google", 48.0),
    ],
    "Office": [
        ("GGOEGOFF4101", "Google Dotted Notebook", "Google", 12.0),
        ("GGOEGOFF4102", "Google Gel Pen Set", "Google", 9.0),
        ("GGOEAOFF4103", "Android Sticker Sheet", "Android", 4.0),
        ("GGOEGOFF4104", "Google Felt Desk Mat", "Google", 34.0),
        ("GGOEYOFF4105", "YouTube Notebook Red", "YouTube", 12.0),
        ("GGOEGOFF4106", "Google Highlighter Trio", "Google", 7.0),
        ("GGOEGOFF4107", "Google Sticky Note Cube", "Google", 6.0),
        ("GGOEGOFF4108", "Google Zip Pencil Case", "Google", 11.0),
    ],
    "Lifestyle": [
        ("GGOEALIF5101", "Android Plush Figure", "Android", 20.0),
        ("GGOEGLIF5102", "Google Compact Umbrella", "Google", 29.0),
        ("GGOEYLIF5103", "YouTube Phone Stand", "YouTube", 16.0),
        ("GGOEGLIF5104", "Google Enamel Keychain", "(not set)", 8.0),
        ("GGOEGLIF5105", "Google Picnic Blanket", "Google", 52.0),
        ("GGOEALIF5106", "Android Lip Balm Duo", "(not set)", 6.0),
        ("GGOEGLIF5107", "Google Pet Bandana", "Google", 14.0),
        ("GGOEGLIF5108", "Google Cork Yoga Mat", "Google", 58.0),
    ],
}
CATEGORIES = list(CATALOGUE)
SALE = ("GGOEGXXX1202", 44.0, MONDAY + 2 * 86400)  # the hoodie costs 44 from Wednesday on: the latest price wins

DEVICES = [
    {"category": "desktop", "operating_system": "Windows", "language": "en-us", "browser": "Chrome"},
    {"category": "mobile", "operating_system": "iOS", "language": "en-us", "browser": "Safari"},
    {"category": "mobile", "operating_system": "Android", "language": "es-us", "browser": "Chrome"},
    {"category": "desktop", "operating_system": "Macintosh", "language": "en-gb", "browser": "Safari"},
    {"category": "tablet", "operating_system": "iOS", "language": "en-us", "browser": "Safari"},
]
CITIES = [
    ("Americas", "United States", "California", "San Jose"),
    ("Americas", "United States", "Washington", "Seattle"),
    ("Americas", "United States", "New York", "New York"),
    ("Americas", "Canada", "Ontario", "Toronto"),
    ("Europe", "United Kingdom", "England", "London"),
    ("Americas", "United States", "Texas", "Austin"),
]
SOURCES = [("(direct)", "(none)", "(direct)"), ("(organic)", "organic", "google"), ("(referral)", "referral", "t.co")]
AD = ("spring_sale", "cpc", "google")


def item_fields(item_id: str, at_s: int, *, index: str = "(not set)", list_name: str = "(not set)") -> dict:
    for category, rows in CATALOGUE.items():
        for row_id, name, brand, price in rows:
            if row_id == item_id:
                if item_id == SALE[0] and at_s >= SALE[2]:
                    price = SALE[1]
                return {
                    "item_id": item_id,
                    "item_name": name,
                    "item_brand": brand,
                    "item_variant": "(not set)",
                    "item_category": category,
                    "price_in_usd": price,
                    "price": price,
                    "quantity": "1",
                    "item_list_name": list_name,
                    "item_list_index": index,
                }
    raise KeyError(item_id)


def name_of(item_id: str) -> str:
    return next(name for rows in CATALOGUE.values() for row_id, name, _, _ in rows if row_id == item_id)


class Visitor:
    """One browser (a user_pseudo_id): its sessions append export rows to `rows`."""

    def __init__(self, rows: list[dict], number: int, first_visit_s: int, source=None):
        self.rows, self.number, self.first_visit_s = rows, number, first_visit_s
        # a pseudo id looks like GA4's: a random 31-bit number and the first visit's unix seconds
        self.pseudo_id = f"{(number + 1) * 2654435761 % 2**31}.{first_visit_s}"
        self.user_id = None
        self.sessions = 0
        self.device = DEVICES[number % len(DEVICES)]
        self.geo = CITIES[number % len(CITIES)]
        self.source = source or SOURCES[number % len(SOURCES)]

    def begin(self, start_s: int) -> None:
        self.sessions += 1
        self.session_id, self.clock_us, self.bundle = start_s, start_s * 1_000_000, 0

    def session(self, start_s: int) -> None:
        self.begin(start_s)
        self.event("session_start", page="/", title="Home", same_instant=True)
        if self.sessions == 1:
            self.event("first_visit", page="/", title="Home", same_instant=True)
        self.event("page_view", page="/", title="Home", same_instant=True)

    def event(self, name, items=(), page=None, title=None, same_instant=False, ecommerce=None, pseudo=True) -> dict:
        if not same_instant:  # a few seconds to a minute apart, with GA4's sub-second digits
            self.bundle += 1
            seconds = 7 + (self.number * 13 + self.bundle * 29) % 50
            self.clock_us += seconds * 1_000_000 + (self.bundle * 7919) % 999_983
        params = [
            {"key": "ga_session_id", "value": {"int_value": str(self.session_id)}},
            {"key": "ga_session_number", "value": {"int_value": str(self.sessions)}},
        ]
        if page is not None:
            params.append({"key": "page_location", "value": {"string_value": HOST + page}})
            params.append({"key": "page_title", "value": {"string_value": f"{title} | Example Outfitters"}})
        if name not in ("session_start", "first_visit"):
            params.append({"key": "engagement_time_msec", "value": {"int_value": str(1000 + self.clock_us % 9000)}})
        row = {
            "event_date": dt.datetime.fromtimestamp(self.clock_us / 1e6, LOS_ANGELES).strftime("%Y%m%d"),
            "event_timestamp": str(self.clock_us),
            "event_name": name,
            "event_params": params,
            "event_bundle_sequence_id": str(self.bundle + 1),
            **({"user_id": self.user_id} if self.user_id else {}),
            **({"user_pseudo_id": self.pseudo_id} if pseudo else {}),
            "user_first_touch_timestamp": str(self.first_visit_s * 1_000_000),
            "device": {
                "category": self.device["category"],
                "operating_system": self.device["operating_system"],
                "language": self.device["language"],
                "web_info": {"browser": self.device["browser"], "hostname": HOST[8:]},
            },
            "geo": dict(zip(("continent", "country", "region", "city"), self.geo, strict=True)),
            "traffic_source": dict(zip(("name", "medium", "source"), self.source, strict=True)),
            "stream_id": STREAM_ID,
            "platform": "WEB",
            **({"ecommerce": ecommerce} if ecommerce else {}),
            "items": list(items),
        }
        self.rows.append(row)
        return row

    def now_s(self) -> int:
        return self.clock_us // 1_000_000

    def product(self, item_id: str) -> dict:
        """A product page: its page_view, then the view_item the page's tag sends."""
        self.event("page_view", page=f"/product/{item_id}", title=name_of(item_id))
        return self.event("view_item", [item_fields(item_id, self.now_s())], same_instant=True)

    def category_page(self, category: str, item_ids: list[str]) -> None:
        self.event("page_view", page=f"/category/{category.lower()}", title=category, same_instant=True)
        self.event(
            "view_item_list",
            [
                item_fields(i, self.now_s(), index=str(n + 1), list_name=f"Category: {category}")
                for n, i in enumerate(item_ids)
            ],
            same_instant=True,
        )

    def cart(self, item_id: str) -> None:
        self.event("add_to_cart", [item_fields(item_id, self.now_s())])

    def checkout_and_buy(self, item_ids: list[str], transaction: str) -> None:
        items = [item_fields(i, self.now_s()) for i in item_ids]
        self.event("view_cart", items, page="/cart", title="Cart")
        self.event("begin_checkout", items, page="/checkout", title="Checkout")
        bought = [{**it, "item_revenue_in_usd": it["price"], "item_revenue": it["price"]} for it in items]
        revenue = sum(it["price"] for it in items)
        totals = {"total_item_quantity": str(len(items)), "unique_items": str(len(items))}
        totals |= {"purchase_revenue_in_usd": revenue, "purchase_revenue": revenue, "transaction_id": transaction}
        self.event("purchase", bought, ecommerce=totals)


def shopper_items(u: int) -> tuple[str, list[str]]:
    category = CATEGORIES[u % 5]
    start = (u // 5) % 5
    return category, [row[0] for row in CATALOGUE[category][start : start + 4]]


def local_time(day: int, hour: float) -> int:
    """Unix seconds of `hour` (local, 0-24) on 2024-03-(4 + day) in Los Angeles."""
    return MONDAY + day * 86400 + int(hour * 3600)


def rows() -> list[dict]:
    out: list[dict] = []
    for u in range(30):
        category, (a, b, c, d) = shopper_items(u)
        first = local_time(u % 4, 8 + (u * 37 % 600) / 60)  # Monday to Thursday, 08:00 to 18:00
        visitor = Visitor(out, u, first)
        visitor.session(first)
        if u < 10 or u >= 20:  # buyers and signed-in buyers
            visitor.category_page(category, [a, b, c, d])
            for item in (a, b):
                visitor.product(item)
            visitor.cart(b)
            viewed_c = visitor.product(c)
            if u == 7:  # the export holds this event twice
                out.append(json.loads(json.dumps(viewed_c)))
            # the next day: late at night for buyer 9, whose purchase falls after midnight (the next daily file)
            visitor.session(local_time(u % 4 + 1, 23 + 58 / 60 if u == 9 else 19 + (u % 3)))
            visitor.product(d)
            if u >= 20:
                visitor.event("login", page="/account/login", title="Sign in")
                visitor.user_id = f"cust-{10400 + 17 * u}"
            visitor.cart(d)
            visitor.checkout_and_buy([b, d], f"T-{58000 + 101 * u}")
        else:  # wishers
            visitor.category_page(category, [a, b, c, d])
            visitor.product(a)
            visitor.product(b)
            visitor.event("add_to_wishlist", [item_fields(b, visitor.now_s())])
            visitor.session(local_time(u % 4 + 2, 12 + u % 5))
            promo = {**item_fields(c, visitor.now_s()), "promotion_id": "P-SPRING", "promotion_name": "Spring picks"}
            visitor.event("view_promotion", [{**promo, "creative_name": "hero-banner", "creative_slot": "hero"}])
            visitor.product(c)
            if u == 12:  # a product page whose tag sent a name and no id
                nameless = {**item_fields(d, visitor.now_s()), "item_id": "(not set)"}
                visitor.event("view_item", [nameless])
            visitor.product(d)
            visitor.cart(c)
    for k in range(4):  # visitors from an ad who leave after one or two products
        visitor = Visitor(out, 100 + k, local_time(k + 1, 21.5), source=AD)
        visitor.session(visitor.first_visit_s)
        _, items = shopper_items(3 * k + 1)
        for item in items[: 1 + k % 2]:
            visitor.product(item)
    # two bad rows of visitors of their own (the other two are buyer 7's duplicate and wisher 12's nameless item)
    early_tag = Visitor(out, 200, local_time(2, 10))
    early_tag.begin(early_tag.first_visit_s)
    early_tag.event("view_item", [])  # the tag fired before the data layer held the product
    cookieless = Visitor(out, 201, local_time(3, 15))
    cookieless.begin(cookieless.first_visit_s)
    cookieless.event("view_item", [item_fields(CATALOGUE["Bags"][0][0], cookieless.now_s())], pseudo=False)
    return out


def write(folder: Path = FOLDER) -> dict[str, int]:
    """Writes one events_YYYYMMDD.json per event_date (rows in time order); returns {file name: rows}."""
    by_day: dict[str, list[dict]] = {}
    for row in rows():
        by_day.setdefault(row["event_date"], []).append(row)
    folder.mkdir(exist_ok=True)
    for old in folder.glob("events_*.json"):
        old.unlink()
    counts = {}
    for day, day_rows in sorted(by_day.items()):
        day_rows.sort(key=lambda r: (int(r["event_timestamp"]), r.get("user_pseudo_id", "")))
        text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in day_rows)
        (folder / f"events_{day}.json").write_text(text)
        counts[f"events_{day}.json"] = len(day_rows)
    return counts


if __name__ == "__main__":
    written = write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
    print(f"{sum(written.values())} rows: {written}")
