"""Synthetic shop: a latent world of users and items, and the event and impression logs it generates.

Why: public data sets have no impressions and no ground truth. A simulated shop whose latent world is
known lets every stage run end to end, and lets experiments compute the true value of any policy.

The world (`ShopWorld`, built by `make_world(preset_or_config, seed)`, deterministic for both)
  - catalogue: `item_ids` (str), `item_category`, `item_brand` (-1 = unknown), `item_price`, `item_available`,
    `item_popularity` (Zipf-like, sums to 1), `item_quality`; `successors[item]` = K items that tend to follow it
    (a complementary-item graph: the strongest sequential signal, beyond popularity).
  - categories: `category_transition[c]` is a Markov chain over categories (interest drift between sessions).
  - users: `user_ids` (str), long-term tastes (`user_fav_categories`, `user_fav_weights`), `user_price_sensitivity`,
    `user_activity` (number of page views in the logged history).
  - `state`: the mutable `UserState` (current interest category and last viewed item of every user). It starts at
    each user's initial interest; `iter_chunks` advances it through the logged history, so after a full generation
    it is the state "now", where experiments run their policies.

Response model (position-based model, PBM): an item shown at slate position k (0 = top) is clicked with probability
`examination[k] * sigmoid(CLICK_BIAS + fit)`, independently across positions; a click leads to a purchase with
probability `sigmoid(CART_BIAS + fit) * sigmoid(BUY_BIAS + fit)`. `fit` is high when the item is in the user's
current interest category, follows the user's last item in the successor graph, matches long-term taste and
is cheap for a price-sensitive user.
Negative feedback (mute / dismiss): an examined item that is not clicked is muted with probability
`sigmoid(MUTE_BIAS - MUTE_FIT * fit)`, so P(mute at k) = examination[k] * (1 - relevance) * that; a slot is never
both clicked and muted. Under the medium shop's logging policy 4.6% of the shown slots are muted (5.6% of the items
off the user's current interest, 0.4% of those in it) and 16% clicked. Mutes are drawn by `simulate_mutes` after the clicks, from their own generator
in the logs, so the click and purchase draws are the same with or without them; impressions.muted marks them.
  - `world.fit(user_idx [B], item_idx [B,N]) -> [B,N]`
  - `world.click_probability(user_idx [B], item_idx [B,K]) -> [B,K]`: P(click | item_idx[b,k] shown at position k).
  - `world.purchase_probability(user_idx [B], item_idx [B,K]) -> [B,K]`: unconditional P(purchase) for that slot.
  - `world.examination`: float[MAX_SLATE] position bias.
  - `world.sample_requests(n, rng) -> user_idx [n]`: arrivals, in proportion to user activity.
  - `world.candidates(user_idx, rng) -> (item_idx [B,M], valid [B,M])`: the shop's candidate pool (successors of the
    last item, popular items of the current interest, one globally popular item, the best sellers);
    invalid = duplicate or unavailable. `world.logging_scores(user_idx, pool)` are the logging ranker's scores.
  - `world.relevance(user_idx, item_idx)` = P(click | examined); `world.conversion(...)` = P(purchase | click).
  - `world.drift(user_idx, rng)`: a session start (interest moves along the category chain or back to a favourite).
  - `world.logging_policy(user_idx, rng) -> (item_idx [B,S], propensity [B,S])`: the shop's current ranker, a
    Plackett-Luce (softmax without replacement) draw over the candidates; propensity = exact marginal probability
    that this item is shown at this position, as written to impressions.propensity.
  - `world.simulate(user_idx, slates, rng) -> (clicked [B,S], purchased [B,S])`: responses to any policy's slates.
  - `world.mute_probability(user_idx [B], item_idx [B,K]) -> [B,K]`: P(mute) of items[b, k] shown at position k
    (`world.dismissal(...)`: the same without position bias);
    `world.simulate_mutes(user_idx, slates, clicked, rng) -> muted [B,S]`: mutes among the slots not clicked.
  - `world.expected_clicks(user_idx, slates) -> [B]`: the true expected clicks per request (no sampling noise).
  - `world.advance(user_idx, item_idx, moves_interest=None)`: the users viewed these items; the last item always
    changes, the interest category only where `moves_interest` (default: everywhere).
  - `world.shift_interests(fraction, rng) -> ShopWorld`: a copy where `fraction` of users move to a few globally
    trending categories (taste and current interest), so a static ranker goes stale.
  - `plackett_luce_marginals(weights [B,M], slate_size) -> [B,M,S]` exact position marginals.

Logs (`iter_chunks(world, with_impressions=True)` yields `ShopChunk(events, impressions)` Arrow tables per block
of `users_per_chunk` users, so memory stays bounded for the large preset; `items_table(world)` gives the catalogue).
Every session starts with interest drift and a request: the logging policy shows a slate, and each clicked item
becomes a page view (in position order, so every click is a view). Then the user browses organically: a successor of
the last item or a popular item of the current interest (both move the interest), or, without moving it, a return
to a category seen earlier or a globally popular item. Every view may lead to a cart and then a purchase, with
`fit` at the time of the view; impressions.purchased marks clicks that were bought. Ids are zero-padded to the
shop's size: users `u0001`, items `i0001`, categories `c0001`, brands `b0001`; sessions `<user>-<n>`, requests
`r<user>-<n>`. Impression positions are 0-based. Timestamps start at 2025-01-01 UTC; users arrive during the first
half of `days` and spread their sessions over about half of it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components import schema

EPOCH_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
DAY_US = 86_400_000_000
MAX_SLATE = 8
RECENT_CATEGORIES = 20  # how far back a returning visit may reach
NUM_SUCCESSORS = 3
SUCCESSOR_WEIGHTS = np.array([0.5, 0.3, 0.2])
EVENT_NAMES = ("view", "cart", "purchase")
LOGGING_POLICY_NAME = "shop_ranker_pl_v1"

# Response model coefficients (logit scale).
CLICK_BIAS = -2.2
CART_BIAS = -4.2
BUY_BIAS = -2.3
FIT_CATEGORY = 2.2  # item in the user's current interest category
FIT_SUCCESSOR = 1.4  # item follows the user's last item
FIT_TASTE = 0.6  # times the long-term taste weight of the item's category
FIT_PRICE = 0.5  # times price sensitivity times the item's standardised log price
MUTE_BIAS = -2.5  # negative feedback: an examined item that is not clicked is muted w.p. sigmoid(MUTE_BIAS - ...)
MUTE_FIT = 0.8  # ... MUTE_FIT * fit): the worse it fits, the likelier the dismissal


@dataclasses.dataclass(frozen=True)
class ShopConfig:
    """Size and behaviour of a shop; presets below."""

    n_users: int
    n_items: int
    n_categories: int
    n_brands: int
    mean_views_per_user: float
    days: float
    mean_session_views: float = 4.0
    zipf_exponent: float = 1.0
    p_successor: float = 0.35  # next view follows the last item's successor list
    p_revisit: float = 0.15  # next view returns to a category seen earlier (window shopping: interest stays)
    p_explore: float = 0.1  # next view is a globally popular item (interest stays)
    p_session_drift: float = 0.5  # at a session start, interest moves along the category chain
    p_taste_return: float = 0.2  # at a session start, interest returns to a long-term favourite
    unavailable_fraction: float = 0.05
    unknown_brand_fraction: float = 0.1
    slate_size: int = 4
    n_candidates: int = 12
    logging_temperature: float = 1.0
    max_views_per_user: int = 300
    users_per_chunk: int = 40_000


PRESETS = {
    "tiny": ShopConfig(
        n_users=150, n_items=80, n_categories=6, n_brands=12, mean_views_per_user=12, days=14, mean_session_views=3.0
    ),
    "default": ShopConfig(n_users=4000, n_items=1500, n_categories=30, n_brands=150, mean_views_per_user=24, days=60),
    "medium": ShopConfig(n_users=32_000, n_items=8000, n_categories=60, n_brands=500, mean_views_per_user=24, days=90),
    "large": ShopConfig(
        n_users=360_000, n_items=50_000, n_categories=150, n_brands=2500, mean_views_per_user=24, days=180
    ),
}


def preset(name: str) -> ShopConfig:
    """The ShopConfig of a named preset (tiny, default, medium, large); an unknown name is refused with the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown synthetic preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), elementwise: the response model's link from fit to probability."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclasses.dataclass
class UserState:
    """Per-user latent state, indexed by user index: current interest category and last viewed item (-1: none)."""

    category: np.ndarray
    last_item: np.ndarray

    def copy(self) -> UserState:
        """An independent copy, so a simulation can advance users without touching the world's state."""
        return UserState(self.category.copy(), self.last_item.copy())


class CategorySampler:
    """Draws items of given categories in proportion to popularity, vectorised over many draws.

    The per-category CDFs are laid end to end, shifted by the category index, so one searchsorted on
    `category + u` samples every row from its own category.
    """

    def __init__(self, item_category: np.ndarray, item_weight: np.ndarray, n_categories: int):
        order = np.lexsort((np.arange(len(item_category)), item_category))
        cats = item_category[order]
        weights = item_weight[order]
        totals = np.bincount(cats, weights=weights, minlength=n_categories)
        if np.any(totals <= 0):
            raise ValueError("every category needs at least one item with positive weight")
        within = np.cumsum(weights) - np.concatenate([[0.0], np.cumsum(totals)[:-1]])[cats]
        self._cdf = cats + within / totals[cats]
        self._cdf[np.r_[np.nonzero(np.diff(cats))[0], len(cats) - 1]] = np.arange(n_categories) + 1.0
        self._items = order

    def sample(self, categories: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items [shape of categories] drawn within each given category in proportion to popularity."""
        u = categories + rng.random(np.shape(categories)) * (1 - 1e-12)
        return self._items[np.searchsorted(self._cdf, u, side="right").clip(max=len(self._items) - 1)]


def sample_rows(cdf_rows: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per entry of `rows` from the discrete distribution whose CDF is cdf_rows[row]."""
    u = rng.random(len(rows))[:, None]
    return (cdf_rows[rows] < u).sum(axis=1).clip(max=cdf_rows.shape[1] - 1)


@functools.lru_cache(maxsize=16)
def _subset_levels(m: int, slate_size: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per size k < slate_size: membership [n_k, m] of every k-subset of m items, and for each subset and member j
    the index of (subset - j) among the (k-1)-subsets (parent) and j itself (member)."""
    levels = [(np.zeros((1, m)), np.zeros((1, 0), np.int64), np.zeros((1, 0), np.int64))]
    previous = {(): 0}
    for k in range(1, slate_size):
        subsets = list(itertools.combinations(range(m), k))
        membership = np.zeros((len(subsets), m))
        for row, subset in enumerate(subsets):
            membership[row, list(subset)] = 1.0
        parent = np.array([[previous[tuple(x for x in subset if x != j)] for j in subset] for subset in subsets])
        levels.append((membership, parent, np.array(subsets)))
        previous = {subset: row for row, subset in enumerate(subsets)}
    return levels


def plackett_luce_marginals(weights: np.ndarray, slate_size: int) -> np.ndarray:
    """P(item m at position k) under Plackett-Luce sampling without replacement: float[B, M, slate_size].

    Exact: a dynamic programme over the sets A of items that fill the first k positions,
    P(A first) = sum_{j in A} P(A - j first) * w_j / (W - w(A - j)), and P(i at k) = sum_A P(A first) w_i / (W - w(A)).
    Cost grows with C(M, S-1), fine for M ~ 12. Zero weights are never drawn; every row needs at least
    `slate_size` positive weights.
    """
    weights = np.asarray(weights, dtype=np.float64)
    batch, m = weights.shape
    if np.any((weights > 0).sum(axis=1) < slate_size):
        raise ValueError(f"every row needs at least {slate_size} candidates with positive weight")
    # Subsets by rows and requests by columns, so the gathers below copy contiguous rows.
    columns = weights.T.copy()
    total = columns.sum(axis=0, keepdims=True)
    marginals = np.zeros((slate_size, m, batch))
    first = np.ones((1, batch))
    ratio = first
    for k, (membership, parent, member) in enumerate(_subset_levels(m, slate_size)):
        if k:
            first = sum(ratio[parent[:, r]] * columns[member[:, r]] for r in range(k))
        remaining = total - membership @ columns
        ratio = first / np.where(remaining > 0, remaining, np.inf)
        marginals[k] = columns * ((1.0 - membership).T @ ratio)
    marginals = marginals.transpose(2, 1, 0)
    return marginals


def sample_plackett_luce(weights: np.ndarray, slate_size: int, rng: np.random.Generator) -> np.ndarray:
    """Column indices of a Plackett-Luce draw per row (Gumbel-top-k): int[B, slate_size]."""
    with np.errstate(divide="ignore"):
        keys = np.log(weights) + rng.gumbel(size=weights.shape)
    return np.argsort(-keys, axis=1, kind="stable")[:, :slate_size]


@dataclasses.dataclass
class ShopWorld:
    """The latent shop; see the module docstring for the API."""

    config: ShopConfig
    seed: int
    item_ids: np.ndarray
    item_category: np.ndarray
    item_brand: np.ndarray
    item_price: np.ndarray
    item_price_z: np.ndarray
    item_available: np.ndarray
    item_popularity: np.ndarray
    item_quality: np.ndarray
    successors: np.ndarray
    category_transition: np.ndarray
    user_ids: np.ndarray
    user_fav_categories: np.ndarray
    user_fav_weights: np.ndarray
    user_price_sensitivity: np.ndarray
    user_activity: np.ndarray
    user_start_us: np.ndarray
    best_sellers: np.ndarray
    state: UserState
    examination: np.ndarray = dataclasses.field(default_factory=lambda: 1.0 / np.sqrt(1.0 + np.arange(MAX_SLATE)))

    def __post_init__(self) -> None:
        self._sampler = CategorySampler(self.item_category, self.item_popularity, self.config.n_categories)
        self._transition_cdf = np.cumsum(self.category_transition, axis=1)
        self._fav_cdf = np.cumsum(self.user_fav_weights, axis=1)
        self._popular_cdf = np.cumsum(self.item_popularity)

    @functools.cached_property
    def arrow_ids(self) -> tuple[pa.Array, pa.Array]:
        """User and item ids as Arrow strings, for building tables by index."""
        return pa.array(self.user_ids, pa.string()), pa.array(self.item_ids, pa.string())

    # ---- response model -----------------------------------------------------------------
    def fit(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """fit [B, N] of items [B, N] for users [B]: interest, successor, taste and price terms (module docstring)."""
        user_idx = np.asarray(user_idx)
        item_idx = np.asarray(item_idx)
        cats = self.item_category[item_idx]
        in_interest = cats == self.state.category[user_idx][:, None]
        last = self.state.last_item[user_idx]
        follows = (self.successors[last.clip(min=0)][:, None, :] == item_idx[:, :, None]).any(axis=2) & (last >= 0)[
            :, None
        ]
        taste = (
            (self.user_fav_categories[user_idx][:, None, :] == cats[:, :, None])
            * self.user_fav_weights[user_idx][:, None, :]
        ).sum(axis=2)
        price = self.user_price_sensitivity[user_idx][:, None] * self.item_price_z[item_idx]
        return (
            FIT_CATEGORY * in_interest
            + FIT_SUCCESSOR * follows
            + FIT_TASTE * taste
            - FIT_PRICE * price
            + self.item_quality[item_idx]
        )

    def relevance(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(click | examined): the click probability without position bias."""
        return sigmoid(CLICK_BIAS + self.fit(user_idx, item_idx))

    def conversion(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(purchase | view or click): through the cart."""
        fit = self.fit(user_idx, item_idx)
        return sigmoid(CART_BIAS + fit) * sigmoid(BUY_BIAS + fit)

    def click_probability(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(click) [B, K] of items [B, K] shown to users [B] at positions 0..K-1: examination times relevance."""
        item_idx = np.asarray(item_idx)
        return self.examination[: item_idx.shape[1]] * self.relevance(user_idx, item_idx)

    def dismissal(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(mute | examined): not clicked, then dismissed; the mute probability without position bias."""
        fit = self.fit(user_idx, item_idx)
        return (1.0 - sigmoid(CLICK_BIAS + fit)) * sigmoid(MUTE_BIAS - MUTE_FIT * fit)

    def mute_probability(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """P(mute | item_idx[b, k] shown at position k)."""
        item_idx = np.asarray(item_idx)
        return self.examination[: item_idx.shape[1]] * self.dismissal(user_idx, item_idx)

    def simulate_mutes(
        self, user_idx: np.ndarray, slates: np.ndarray, clicked: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Mutes given the clicks drawn: P(mute | not clicked) = P(mute) / (1 - P(click)), never on a clicked slot."""
        p_mute = self.mute_probability(user_idx, slates)
        p_click = self.click_probability(user_idx, slates)
        return ~clicked & (rng.random(np.shape(slates)) < p_mute / np.maximum(1.0 - p_click, 1e-12))

    def purchase_probability(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """The unconditional P(purchase) [B, K] of each shown slot: P(click) times P(purchase | click)."""
        return self.click_probability(user_idx, item_idx) * self.conversion(user_idx, item_idx)

    def expected_clicks(self, user_idx: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """The true expected clicks [B] of each request's slate [B, K], without sampling noise."""
        return self.click_probability(user_idx, slates).sum(axis=1)

    def simulate(self, user_idx: np.ndarray, slates: np.ndarray, rng: np.random.Generator):
        """Sampled responses (clicked [B, K], purchased [B, K]) of users [B] to any policy's slates [B, K]."""
        clicked = rng.random(slates.shape) < self.click_probability(user_idx, slates)
        purchased = clicked & (rng.random(slates.shape) < self.conversion(user_idx, slates))
        return clicked, purchased

    # ---- requests and the logging policy ------------------------------------------------
    def sample_requests(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The users [n] of `n` requests, drawn in proportion to user activity."""
        cdf = np.cumsum(self.user_activity / self.user_activity.sum())
        return np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right").clip(max=len(cdf) - 1)

    def candidates(self, user_idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The shop's candidate pool (item_idx [B, M], valid [B, M]) of users [B] (module docstring)."""
        user_idx = np.asarray(user_idx)
        n_best = len(self.best_sellers)
        n_interest = self.config.n_candidates - NUM_SUCCESSORS - n_best - 1
        last = self.state.last_item[user_idx]
        follows = np.where(last[:, None] >= 0, self.successors[last.clip(min=0)], self.best_sellers[0])
        interest = self._sampler.sample(np.repeat(self.state.category[user_idx], n_interest), rng).reshape(
            -1, n_interest
        )
        popular = np.searchsorted(self._popular_cdf, rng.random((len(user_idx), 1)) * self._popular_cdf[-1])
        popular = popular.clip(max=len(self.item_ids) - 1)
        pool = np.concatenate(
            [follows, interest, popular, np.broadcast_to(self.best_sellers, (len(user_idx), n_best))], axis=1
        )
        return pool, first_occurrence(pool) & self.item_available[pool]

    def logging_scores(self, user_idx: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """The shop's current ranker: popular items, boosted when in the category of the user's last item."""
        last = self.state.last_item[np.asarray(user_idx)]
        same = (self.item_category[pool] == self.item_category[last.clip(min=0)][:, None]) & (last >= 0)[:, None]
        return 0.8 * np.log(self.item_popularity[pool] * len(self.item_ids)) + 1.0 * same

    def logging_policy(self, user_idx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The logging ranker's slates (item_idx [B, S], propensity [B, S]): a Plackett-Luce draw with exact
        marginals."""
        pool, valid = self.candidates(user_idx, rng)
        weights = np.exp(self.logging_scores(user_idx, pool) / self.config.logging_temperature) * valid
        size = self.config.slate_size
        picks = sample_plackett_luce(weights, size, rng)
        marginals = plackett_luce_marginals(weights, size)
        rows = np.arange(len(pool))[:, None]
        propensity = marginals[rows, picks, np.arange(size)[None, :]]
        return pool[rows, picks], propensity

    # ---- dynamics -------------------------------------------------------------------------
    def advance(self, user_idx: np.ndarray, item_idx: np.ndarray, moves_interest: np.ndarray | None = None) -> None:
        """Records that users [B] viewed items [B]: the last item always moves, the interest where moves_interest
        says."""
        moves = slice(None) if moves_interest is None else moves_interest
        self.state.category[user_idx[moves]] = self.item_category[item_idx[moves]]
        self.state.last_item[user_idx] = item_idx

    def drift(self, user_idx: np.ndarray, rng: np.random.Generator) -> None:
        """Session start: interest moves along the category chain, or back to a long-term favourite."""
        u = rng.random(len(user_idx))
        move = user_idx[u < self.config.p_session_drift]
        self.state.category[move] = sample_rows(self._transition_cdf, self.state.category[move], rng)
        back = user_idx[
            (u >= self.config.p_session_drift) & (u < self.config.p_session_drift + self.config.p_taste_return)
        ]
        favs = sample_rows(self._fav_cdf, back, rng)
        self.state.category[back] = self.user_fav_categories[back, favs]

    def organic_next(
        self, user_idx: np.ndarray, rng: np.random.Generator, past_categories: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The next page view without a recommendation, and whether it moves the user's interest.

        Successor of the last item or a popular item of the current interest (both move the interest), a return to
        a category among `past_categories` [B, R] (-1 = empty) or a globally popular item (neither does: browsing
        that a model must tell apart from the current interest by its position in the sequence).
        """
        cfg = self.config
        items = self._sampler.sample(self.state.category[user_idx], rng)
        u = rng.random(len(user_idx))
        last = self.state.last_item[user_idx]
        follow = (u < cfg.p_successor) & (last >= 0)
        pick = np.searchsorted(np.cumsum(SUCCESSOR_WEIGHTS), rng.random(follow.sum()) * (1 - 1e-12), side="right")
        items[follow] = self.successors[last[follow], pick]
        revisit = (u >= cfg.p_successor) & (u < cfg.p_successor + cfg.p_revisit)
        if past_categories is not None and revisit.any():
            slots = past_categories[revisit]
            chosen = slots[np.arange(len(slots)), rng.integers(0, slots.shape[1], len(slots))]
            revisit[np.nonzero(revisit)[0][chosen < 0]] = False
            items[revisit] = self._sampler.sample(chosen[chosen >= 0], rng)
        else:
            revisit[:] = False
        explore = (u >= cfg.p_successor + cfg.p_revisit) & (u < cfg.p_successor + cfg.p_revisit + cfg.p_explore)
        popular = np.searchsorted(self._popular_cdf, rng.random(explore.sum()) * self._popular_cdf[-1])
        items[explore] = popular.clip(max=len(self.item_ids) - 1)
        repeat = items == last
        items[repeat] = self._sampler.sample(self.state.category[user_idx[repeat]], rng)
        return items, ~((revisit | explore) & ~repeat)

    def shift_interests(self, fraction: float, rng: np.random.Generator) -> ShopWorld:
        """A copy of the world where `fraction` of users turn to a few trending categories."""
        shifted = copy.deepcopy(self)
        n_trending = max(1, self.config.n_categories // 10)
        trending = rng.choice(self.config.n_categories, size=n_trending, replace=False)
        movers = np.nonzero(rng.random(len(self.user_ids)) < fraction)[0]
        new_cats = trending[rng.integers(0, n_trending, len(movers))]
        shifted.user_fav_categories[movers, 0] = new_cats
        shifted.user_fav_weights[movers] = np.array([0.7, 0.2, 0.1])[None, :]
        shifted.state.category[movers] = new_cats
        shifted.__post_init__()
        return shifted


def first_occurrence(pool: np.ndarray) -> np.ndarray:
    """True where pool[b, j] does not appear earlier in row b."""
    earlier = (pool[:, :, None] == pool[:, None, :]) & np.tri(pool.shape[1], k=-1, dtype=bool)[None, :, :]
    return ~earlier.any(axis=2)


def distinct_draw(sampler: CategorySampler, item_category: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One popular item of each item's own category, other than the item itself where the category allows."""
    items = np.arange(len(item_category))
    drawn = sampler.sample(item_category, rng)
    for _ in range(20):
        same = drawn == items
        if not same.any():
            break
        drawn[same] = sampler.sample(item_category[same], rng)
    return drawn


def zero_padded(prefix: str, n: int) -> np.ndarray:
    """Ids prefix0001..prefixN, zero-padded to the shop's size (at least 4 digits) so they sort in creation order."""
    width = max(len(str(n)), 4)
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def make_world(preset_or_config: str | ShopConfig, seed: int = 0) -> ShopWorld:
    """The latent world of a preset (or config) and seed, at its initial state; deterministic."""
    cfg = preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    if cfg.n_categories < 2 or cfg.n_items < cfg.n_categories or cfg.n_brands < cfg.n_categories:
        raise ValueError("a shop needs >= 2 categories, at least one item and one brand per category")
    if cfg.n_candidates - NUM_SUCCESSORS - cfg.slate_size - 1 < 1 or cfg.slate_size > MAX_SLATE:
        raise ValueError("n_candidates too small for the slate size")
    rng = np.random.default_rng([seed, 0])
    n_items, n_cats = cfg.n_items, cfg.n_categories

    category_size = 1.0 / (1.0 + np.arange(n_cats)) ** 0.6
    item_category = np.concatenate(
        [np.arange(n_cats), rng.choice(n_cats, n_items - n_cats, p=category_size / category_size.sum())]
    )
    rank = rng.permutation(n_items)
    popularity = 1.0 / (1.0 + rank) ** cfg.zipf_exponent
    popularity /= popularity.sum()

    per_category = cfg.n_brands // n_cats
    brand = item_category + n_cats * rng.integers(0, per_category, n_items)
    brand[rng.random(n_items) < cfg.unknown_brand_fraction] = -1
    log_price = rng.normal(3.0, 0.8, n_cats)[item_category] + rng.normal(0.0, 0.4, n_items)
    price = np.round(np.exp(log_price), 2)
    cat_mean = np.bincount(item_category, weights=log_price, minlength=n_cats) / np.bincount(
        item_category, minlength=n_cats
    )
    price_z = (log_price - cat_mean[item_category]) / 0.4

    best_sellers = np.argsort(rank)[: cfg.slate_size]
    available = np.ones(n_items, dtype=bool)
    tail = np.setdiff1d(np.arange(n_items), best_sellers)
    available[rng.choice(tail, int(round(cfg.unavailable_fraction * n_items)), replace=False)] = False

    partner = (np.arange(n_cats) + 1 + rng.integers(1, n_cats - 1 if n_cats > 2 else 2, n_cats)) % n_cats
    transition = np.full((n_cats, n_cats), 0.2 / n_cats)
    transition[np.arange(n_cats), (np.arange(n_cats) + 1) % n_cats] += 0.5
    transition[np.arange(n_cats), partner] += 0.3

    sampler = CategorySampler(item_category, popularity, n_cats)
    successors = np.stack(
        [
            distinct_draw(sampler, item_category, rng),
            sampler.sample((item_category + 1) % n_cats, rng),
            sampler.sample(partner[item_category], rng),
        ],
        axis=1,
    )[:, rng.permutation(NUM_SUCCESSORS)]

    n_users = cfg.n_users
    cat_popularity = np.bincount(item_category, weights=popularity, minlength=n_cats)
    fav = np.stack([rng.choice(n_cats, n_users, p=cat_popularity) for _ in range(3)], axis=1)
    fav_weights = np.sort(rng.dirichlet(np.ones(3), n_users), axis=1)[:, ::-1].copy()
    activity = np.minimum(
        2 + rng.negative_binomial(1.2, 1.2 / (1.2 + cfg.mean_views_per_user - 2), n_users), cfg.max_views_per_user
    )
    start = EPOCH_US + (rng.random(n_users) * 0.5 * cfg.days * DAY_US).astype(np.int64)
    initial = fav[np.arange(n_users), sample_rows(np.cumsum(fav_weights, axis=1), np.arange(n_users), rng)]
    return ShopWorld(
        config=cfg,
        seed=seed,
        item_ids=zero_padded("i", n_items),
        item_category=item_category,
        item_brand=brand,
        item_price=price,
        item_price_z=price_z,
        item_available=available,
        item_popularity=popularity,
        item_quality=rng.normal(0.0, 0.4, n_items),
        successors=successors,
        category_transition=transition,
        user_ids=zero_padded("u", n_users),
        user_fav_categories=fav,
        user_fav_weights=fav_weights,
        user_price_sensitivity=rng.gamma(2.0, 0.5, n_users),
        user_activity=activity,
        user_start_us=start,
        best_sellers=best_sellers,
        state=UserState(category=initial.astype(np.int64), last_item=np.full(n_users, -1, dtype=np.int64)),
    )


# ---- logs -------------------------------------------------------------------------------------
@dataclasses.dataclass
class ShopChunk:
    """The logs of one block of users: Arrow tables in schema.EVENTS and schema.IMPRESSIONS."""

    events: pa.Table
    impressions: pa.Table


class _Columns:
    """Appends numpy columns step by step and concatenates them once."""

    def __init__(self, *names: str):
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in names}

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            self._parts[name].append(np.asarray(values))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in self._parts.items()}


def _session_keys(user_ids: pa.Array, sessions: np.ndarray, prefix: str) -> pa.Array:
    joined = pc.binary_join_element_wise(user_ids, pc.cast(pa.array(sessions), pa.string()), "-")
    return pc.binary_join_element_wise(pa.scalar(prefix), joined, "") if prefix else joined


def _timestamps(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(np.int64), pa.timestamp("us", tz="UTC"))


def simulate_users(
    world: ShopWorld, users: np.ndarray, rng: np.random.Generator, with_impressions: bool = True
) -> ShopChunk:
    """Runs the logged history of `users` step by step, vectorised over the users; advances world.state."""
    cfg = world.config
    n, size = len(users), cfg.slate_size
    views = world.user_activity[users].copy()
    clock = world.user_start_us[users].astype(np.float64)
    mean_gap = 0.5 * cfg.days * DAY_US / np.maximum(1.0, views / cfg.mean_session_views)
    session = np.zeros(n, np.int64)
    seq = np.zeros(n, np.int64)
    new_session = np.ones(n, dtype=bool)
    queue_items = np.full((n, size), -1, np.int64)
    queue_rows = np.full((n, size), -1, np.int64)
    queue_next = np.zeros(n, np.int64)
    queue_len = np.zeros(n, np.int64)
    recent = np.full((n, RECENT_CATEGORIES), -1, np.int64)
    events = _Columns("user", "item", "kind", "ts", "seq", "session")
    shown = _Columns("user", "item", "position", "propensity", "ts", "clicked", "muted", "session")
    # mutes from their own stream, so every other draw (and so the whole log but `muted`) is as without them
    mute_rng = np.random.default_rng([world.seed, 2, int(users[0]) if len(users) else 0])
    bought_rows: list[np.ndarray] = []
    n_shown = 0
    step = -1
    while True:
        step += 1
        local = np.nonzero(views > step)[0]
        if not len(local):
            break
        starting = local[new_session[local]]
        if len(starting):
            clock[starting] += rng.exponential(mean_gap[starting]) * (step > 0)
            session[starting] += step > 0
            world.drift(users[starting], rng)
            if with_impressions:
                items, propensity = world.logging_policy(users[starting], rng)
                clicked, _ = world.simulate(users[starting], items, rng)
                muted = world.simulate_mutes(users[starting], items, clicked, mute_rng)
                rows = n_shown + np.arange(items.size).reshape(items.shape)
                n_shown += items.size
                shown.add(
                    user=np.repeat(starting, size),
                    item=items.ravel(),
                    position=np.tile(np.arange(size), len(starting)),
                    propensity=propensity.ravel(),
                    ts=np.repeat(clock[starting], size),
                    clicked=clicked.ravel(),
                    muted=muted.ravel(),
                    session=np.repeat(session[starting], size),
                )
                order = np.argsort(~clicked, axis=1, kind="stable")
                queue_items[starting] = np.take_along_axis(items, order, axis=1)
                queue_rows[starting] = np.take_along_axis(rows, order, axis=1)
                queue_next[starting] = 0
                queue_len[starting] = clicked.sum(axis=1)
                views[starting] = np.maximum(views[starting], step + queue_len[starting])  # every click is a view
                clock[starting] += 2e6
        from_queue = queue_next[local] < queue_len[local]
        item = np.empty(len(local), np.int64)
        queued = local[from_queue]
        item[from_queue] = queue_items[queued, queue_next[queued]]
        source_row = queue_rows[queued, queue_next[queued]]
        queue_next[queued] += 1
        moves = np.ones(len(local), dtype=bool)
        organic = local[~from_queue]
        item[~from_queue], moves[~from_queue] = world.organic_next(users[organic], rng, recent[organic])

        fit = world.fit(users[local], item[:, None])[:, 0]
        cart = rng.random(len(local)) < sigmoid(CART_BIAS + fit)
        buy = cart & (rng.random(len(local)) < sigmoid(BUY_BIAS + fit))
        bought_rows.append(source_row[buy[from_queue]])
        t_view = clock[local]
        t_cart = t_view + rng.uniform(5e6, 120e6, len(local))
        t_buy = t_cart + rng.uniform(10e6, 300e6, len(local))
        events.add(
            user=local, item=item, kind=np.zeros(len(local), np.int8), ts=t_view, seq=seq[local], session=session[local]
        )
        events.add(
            user=local[cart],
            item=item[cart],
            kind=np.ones(cart.sum(), np.int8),
            ts=t_cart[cart],
            seq=seq[local[cart]] + 1,
            session=session[local[cart]],
        )
        events.add(
            user=local[buy],
            item=item[buy],
            kind=np.full(buy.sum(), 2, np.int8),
            ts=t_buy[buy],
            seq=seq[local[buy]] + 2,
            session=session[local[buy]],
        )
        seq[local] += 1 + cart + buy
        clock[local] = np.where(buy, t_buy, np.where(cart, t_cart, t_view)) + 5e6 + rng.exponential(60e6, len(local))
        world.advance(users[local], item, moves)
        recent[local, step % RECENT_CATEGORIES] = world.item_category[item]
        idle = queue_next[local] >= queue_len[local]
        new_session[local] = idle & (rng.random(len(local)) < 1.0 / cfg.mean_session_views)

    user_ids, item_ids = world.arrow_ids
    return ShopChunk(
        events=_events_table(events.arrays(), users, user_ids, item_ids),
        impressions=_impressions_table(
            shown.arrays(),
            np.concatenate(bought_rows) if bought_rows else np.zeros(0, np.int64),
            users,
            user_ids,
            item_ids,
        ),
    )


def _events_table(cols: dict[str, np.ndarray], users: np.ndarray, user_ids: pa.Array, item_ids: pa.Array) -> pa.Table:
    order = np.lexsort((cols["seq"], cols["user"]))
    user = user_ids.take(pa.array(users[cols["user"][order]]))
    return pa.Table.from_arrays(
        [
            user,
            item_ids.take(pa.array(cols["item"][order])),
            pa.array(EVENT_NAMES, pa.string()).take(pa.array(cols["kind"][order])),
            _timestamps(cols["ts"][order]),
            pa.array(cols["seq"][order], pa.int64()),
            _session_keys(user, cols["session"][order], ""),
        ],
        schema=schema.EVENTS,
    )


def _impressions_table(
    cols: dict[str, np.ndarray], bought_rows: np.ndarray, users: np.ndarray, user_ids: pa.Array, item_ids: pa.Array
) -> pa.Table:
    purchased = np.zeros(len(cols["user"]), dtype=bool)
    purchased[bought_rows] = True
    order = np.lexsort((cols["position"], cols["session"], cols["user"]))
    user = user_ids.take(pa.array(users[cols["user"][order]]))
    return pa.Table.from_arrays(
        [
            _session_keys(user, cols["session"][order], "r"),
            user,
            item_ids.take(pa.array(cols["item"][order])),
            pa.array(cols["position"][order], pa.int64()),
            pa.array(cols["propensity"][order], pa.float64()),
            pa.array(np.full(len(order), LOGGING_POLICY_NAME, dtype=object), pa.string()),
            _timestamps(cols["ts"][order]),
            pa.array(cols["clicked"][order].astype(bool)),
            pa.array(purchased[order]),
            pa.array(cols["muted"][order].astype(bool)),
        ],
        schema=schema.IMPRESSIONS,
    )


def iter_chunks(world: ShopWorld, with_impressions: bool = True) -> Iterator[ShopChunk]:
    """The whole logged history, one block of `users_per_chunk` users at a time; deterministic per world seed."""
    step = world.config.users_per_chunk
    for index, start in enumerate(range(0, world.config.n_users, step)):
        users = np.arange(start, min(start + step, world.config.n_users))
        yield simulate_users(world, users, np.random.default_rng([world.seed, 1, index]), with_impressions)


def items_table(world: ShopWorld) -> pa.Table:
    """The catalogue in schema.ITEMS; brand is null for unknown brands, title is not simulated."""
    categories = zero_padded("c", world.config.n_categories)
    brands = zero_padded("b", world.config.n_brands)
    brand = np.where(world.item_brand >= 0, brands[world.item_brand.clip(min=0)], None)
    return pa.Table.from_arrays(
        [
            pa.array(world.item_ids, pa.string()),
            pa.array(categories[world.item_category], pa.string()),
            pa.array(brand, pa.string()),
            pa.array(world.item_price, pa.float64()),
            pa.nulls(len(world.item_ids), pa.string()),
            pa.array(world.item_available),
        ],
        schema=schema.ITEMS,
    )
