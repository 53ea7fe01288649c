"""The synthetic shop's world, seen the way the experiments need it.

Why here: the estimators and the bandit take plain arrays; this module turns the shop's latent world
(components/warehouse/synthetic.py) into logged requests with exact propensities, observable context features,
a "new ranker" to evaluate, and its true value, so every figure can be checked against ground truth.

Observable features of (user, item), all computable by a real shop from its own logs (never the world's latent
state): the item's log view count, the log count of views going from the user's last item to it (the
item-to-item signal), whether it is in the last item's category, the log share of views going from the last
item's category to its category (interest drifts along a category chain), the user's share of views in its
category, its purchases per view (a quality signal) and its within-category price z-score. The bandit adds a one-hot of the item's category, so it can learn that some
categories trend after an interest shift.

The bandit's shop (StyledShop, the bandit study's world; never the warehouse's logs) adds one cross nobody
engineered: an observable user segment (as the platform or region a user shops from) times an observable item style
(a catalogue tag), with_style_affinity's docstring says how and why.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from components import schema
from components.experiments import ope, rewards
from components.experiments.histories import behaviour_of, histories_of, type_flags
from components.experiments.simulation import Proposal
from components.serving import funnel
from components.warehouse import synthetic

FEATURE_NAMES = (
    "log_views",
    "log_transitions",
    "same_category_as_last",
    "log_category_transition",
    "user_category_share",
    "purchase_rate",
    "price_z",
)
# The features that cross the user's logged history with the item (engineered second-order interactions); the
# others describe the item alone.
CROSSES = ("log_transitions", "same_category_as_last", "log_category_transition", "user_category_share")
PRIOR_VIEWS = 20.0  # purchases per view are shrunk toward the shop's rate with this many pseudo-views


@dataclasses.dataclass(frozen=True)
class ObservedHistory:
    """Counts from the event log; indices are the world's user and item indices."""

    item_views: np.ndarray  # [I]
    transition_keys: np.ndarray  # sorted int64 keys prev * I + next
    transition_counts: np.ndarray  # [len(keys)]
    category_transition: np.ndarray  # [C, C] log P(next view's category | last view's category), smoothed
    user_category_share: np.ndarray  # [U, C]
    purchase_rate: np.ndarray  # [I] purchases per view, shrunk toward the shop's rate
    last_item: np.ndarray  # [U], -1 = no history
    item_category: np.ndarray  # [I]
    price_z: np.ndarray  # [I]

    @classmethod
    def from_events(cls, events: LoggedEvents, world: synthetic.ShopWorld) -> ObservedHistory:
        """From the replayed log (replay: rows sorted by user, event_ts, event_seq, as the shop writes them)."""
        view = events.kind == synthetic.EVENT_NAMES.index("view")
        users, items = events.user[view], events.item[view]
        bought = events.item[events.kind == synthetic.EVENT_NAMES.index("purchase")]
        n_items, n_cats = len(world.item_ids), world.config.n_categories
        same_user = users[1:] == users[:-1]
        keys = items[:-1][same_user].astype(np.int64) * n_items + items[1:][same_user]
        transition_keys, transition_counts = np.unique(keys, return_counts=True)
        cats = world.item_category[items]
        category_transition = np.ones((n_cats, n_cats))
        np.add.at(category_transition, (cats[:-1][same_user], cats[1:][same_user]), 1.0)
        category_transition = np.log(category_transition / category_transition.sum(axis=1, keepdims=True))
        share = np.zeros((len(world.user_ids), n_cats))
        np.add.at(share, (users, cats), 1.0)
        share /= np.maximum(share.sum(axis=1, keepdims=True), 1.0)
        last = np.full(len(world.user_ids), -1, dtype=np.int64)
        last[users] = items  # rows are in time order, so the last write is the last view
        item_views = np.bincount(items, minlength=n_items).astype(np.float64)
        purchases = np.bincount(bought, minlength=n_items).astype(np.float64)
        shop_rate = purchases.sum() / max(item_views.sum(), 1.0)
        purchase_rate = (purchases + PRIOR_VIEWS * shop_rate) / (item_views + PRIOR_VIEWS) / max(shop_rate, 1e-9)
        log_price = np.log(world.item_price)
        cat_mean = np.bincount(world.item_category, log_price, n_cats) / np.maximum(
            np.bincount(world.item_category, minlength=n_cats), 1
        )
        price_z = (log_price - cat_mean[world.item_category]) / max(
            np.std(log_price - cat_mean[world.item_category]), 1e-9
        )
        return cls(
            item_views,
            transition_keys,
            transition_counts.astype(np.float64),
            category_transition,
            share,
            purchase_rate,
            last,
            world.item_category,
            price_z,
        )

    def transitions(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """float [shape of prev]: how often item `nxt` followed item `prev` in the log (0 where prev < 0 or unseen)."""
        keys = prev.astype(np.int64) * len(self.item_views) + nxt
        pos = np.searchsorted(self.transition_keys, keys).clip(max=len(self.transition_keys) - 1)
        found = (self.transition_keys[pos] == keys) & (prev >= 0)
        return np.where(found, self.transition_counts[pos], 0.0)

    def features(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """FEATURE_NAMES for users [B] and items [B, N]: float [B, N, len(FEATURE_NAMES)]."""
        last = np.broadcast_to(self.last_item[users][:, None], items.shape)
        cats = self.item_category[items]
        last_cats = self.item_category[last.clip(min=0)]
        has_last = last >= 0
        same = (cats == last_cats) & has_last
        category_move = np.where(has_last, self.category_transition[last_cats, cats], 0.0)
        share = np.take_along_axis(self.user_category_share[users], cats, axis=1)
        return np.stack(
            [
                np.log1p(self.item_views[items]) / 5.0,
                np.log1p(self.transitions(last, items)),
                same,
                category_move / 5.0,
                share,
                self.purchase_rate[items],
                self.price_z[items],
            ],
            axis=-1,
        )


@dataclasses.dataclass(frozen=True)
class LoggedEvents:
    """The shop's logged events as integer codes, in the log's order (by user, event_ts, event_seq). Why not the
    Arrow table: the studies group and index every event (10.25M on the large preset), and string ids grouped as
    pandas objects cost far more than these 17 bytes an event."""

    user: np.ndarray  # int32 [E] world user index
    item: np.ndarray  # int32 [E] world item index
    kind: np.ndarray  # int8 [E] index into synthetic.EVENT_NAMES
    seconds: np.ndarray  # int64 [E] event_ts in whole UTC seconds (floored)

    @classmethod
    def encode(cls, events: pa.Table, world: synthetic.ShopWorld) -> LoggedEvents:
        """Codes of schema.EVENTS rows of this world; refuses a user, item or event type the world does not have."""
        user_ids, item_ids = world.arrow_ids
        codes = [
            pc.index_in(events.column(name), value_set=values)
            for name, values in (
                ("user_id", user_ids),
                ("item_id", item_ids),
                ("event_type", pa.array(synthetic.EVENT_NAMES, pa.string())),
            )
        ]
        if any(code.null_count for code in codes):
            raise ValueError(
                "events name users, items or event types that are not in this world: wrong preset or seed?"
            )
        user, item, kind = (code.to_numpy() for code in codes)
        micros = events.column("event_ts").cast(pa.int64()).to_numpy()
        return cls(user.astype(np.int32), item.astype(np.int32), kind.astype(np.int8), micros // 1_000_000)

    @classmethod
    def concat(cls, parts: list[LoggedEvents]) -> LoggedEvents:
        """The parts one after the other."""
        fields = [f.name for f in dataclasses.fields(cls)]
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in fields))


def replay(preset: str, seed: int) -> tuple[synthetic.ShopWorld, LoggedEvents, int]:
    """The world after its logged history ("now"), the history's events (LoggedEvents, encoded one chunk of users
    at a time) and its impression count. Deterministic: the same preset and seed give the warehouse the bench
    built."""
    world = synthetic.make_world(preset, seed)
    events, impressions = [], 0
    for chunk in synthetic.iter_chunks(world):
        events.append(LoggedEvents.encode(chunk.events, world))
        impressions += chunk.impressions.num_rows
    return world, LoggedEvents.concat(events), impressions


def at_session_start(world: synthetic.ShopWorld, users: np.ndarray, rng: np.random.Generator) -> synthetic.ShopWorld:
    """A copy of the world whose `users` just started a session (their interest drifted), as when the logger ran."""
    moved = copy.copy(world)
    moved.state = world.state.copy()
    moved.drift(np.unique(users), rng)
    return moved


NUM_SEGMENTS = 4  # observable user segments of the bandit's shop (StyledShop)
NUM_STYLES = 6  # observable item styles
AFFINITY_RANK = 2


@dataclasses.dataclass
class StyledShop(synthetic.ShopWorld):
    """The bandit study's shop: the synthetic world whose fit (so its clicks, mutes and purchases) adds
    style_affinity[user_segment[u], item_style[i]], a segment x style interaction (with_style_affinity)."""

    user_segment: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # [U]
    item_style: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))  # [I]
    style_affinity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((1, 1)))  # [segments, styles]

    def fit(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """The synthetic world's fit plus the segment x style affinity of each (user, item)."""
        user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
        cross = self.style_affinity[self.user_segment[user_idx][:, None], self.item_style[item_idx]]
        return super().fit(user_idx, item_idx) + cross


def with_style_affinity(
    world: synthetic.ShopWorld,
    scale: float,
    rng: np.random.Generator,
    segments: int = NUM_SEGMENTS,
    styles: int = NUM_STYLES,
) -> StyledShop:
    """The world (its state copied) as a StyledShop: every user in one of `segments` observable segments and every
    item of one of `styles` observable styles (uniform draws), and fit += A[segment, style] with A a rank-2
    interaction (a Gaussian segments x 2 times 2 x styles product), centred on every row and every column and scaled
    to root-mean-square `scale` (0: the synthetic shop's own click model).

    Why: the synthetic shop's click model (components/warehouse/synthetic.py) has no second-order interaction that
    the linear learners' engineered features do not already carry (last item's successors, category transitions,
    the user's category share) and that an FM could learn from the ~2 requests per user of a study; there the FM
    with its factors off collected as much as with them, so the study could not tell a factorization machine from a
    linear model. This one is a cross of two observables that no context feature crosses: both fields reach the FM
    (ShopProposer), the style's one-hot reaches every learner's context. Centred rows and columns make it a pure
    interaction: no segment clicks more than another and no style is better on average, so a style's one-hot weight
    (a first-order term) cannot use it; only the product of segment and style can. The funnel's ranker, trained on
    the warehouse's logs (which have no such term), does not know it either. It lives in the bandit's simulated shop
    only: the logged events every stage trains on, and the OPE study, keep the synthetic shop's model."""
    if scale < 0:
        raise ValueError(f"the affinity's scale must be >= 0, got {scale}")
    affinity = rng.normal(size=(segments, AFFINITY_RANK)) @ rng.normal(size=(AFFINITY_RANK, styles))
    affinity -= affinity.mean(axis=1, keepdims=True)
    affinity -= affinity.mean(axis=0, keepdims=True)
    affinity *= scale / max(float(np.sqrt(np.mean(affinity**2))), 1e-12)
    fields = {f.name: getattr(world, f.name) for f in dataclasses.fields(synthetic.ShopWorld)}
    return StyledShop(
        **fields | {"state": world.state.copy()},
        user_segment=rng.integers(0, segments, len(world.user_ids)),
        item_style=rng.integers(0, styles, len(world.item_ids)),
        style_affinity=affinity,
    )


@dataclasses.dataclass(frozen=True)
class SimulatedLog:
    """Requests logged by the shop's logging policy, with the candidate pool the policy drew from."""

    world: synthetic.ShopWorld  # the state the requests saw
    users: np.ndarray  # [R]
    pool: np.ndarray  # [R, M] candidate items, -1 = invalid (duplicate or unavailable)
    log: ope.LoggedSlates


def log_requests(world: synthetic.ShopWorld, num_requests: int, rng: np.random.Generator) -> SimulatedLog:
    """num_requests fresh requests shown slates by the shop's Plackett-Luce logger, clicks drawn from the world."""
    users = world.sample_requests(num_requests, rng)
    world = at_session_start(world, users, rng)
    pool, valid = world.candidates(users, rng)
    weights = np.exp(world.logging_scores(users, pool) / world.config.logging_temperature) * valid
    size = world.config.slate_size
    picks = synthetic.sample_plackett_luce(weights, size, rng)
    rows = np.arange(num_requests)[:, None]
    propensity = synthetic.plackett_luce_marginals(weights, size)[rows, picks, np.arange(size)[None, :]]
    slates = pool[rows, picks]
    clicked, _ = world.simulate(users, slates, rng)
    muted = world.simulate_mutes(users, slates, clicked, rng)
    log = ope.LoggedSlates(
        request=np.repeat(np.arange(num_requests), size),
        position=np.tile(np.arange(size), num_requests),
        item=slates.ravel(),
        propensity=propensity.ravel(),
        click=clicked.ravel().astype(np.float64),
        num_requests=num_requests,
        slate_size=size,
        mute=muted.ravel().astype(np.float64),
    )
    return SimulatedLog(world, users, np.where(valid, pool, -1), log)


def rank_pool(scores: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Each request's valid candidates (pool >= 0) by descending score, padded with -1 at the end."""
    order = np.argsort(-np.where(pool >= 0, scores, -np.inf), axis=1, kind="stable")
    return np.take_along_axis(pool, order, axis=1)


@dataclasses.dataclass(frozen=True)
class LinearRanker:
    """A stand-in for the funnel's ranker when no trained model is given: a click model over the observable
    features, trained on an earlier log."""

    history: ObservedHistory
    model: ope.RewardModel

    @classmethod
    def train(cls, history: ObservedHistory, logged: SimulatedLog) -> LinearRanker:
        """The click model fitted on a logged run of the shop: the new policy when no trained ranker is given."""
        log = logged.log
        features = history.features(logged.users[log.request], log.item[:, None])[:, 0, :]
        return cls(history, ope.RewardModel.fit(features, log.position, log.click, log.slate_size))

    def scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores [B, N] of candidates [B, N] for users [B] by the fitted click model (padding -1 scored as item 0)."""
        return self.history.features(users, candidates.clip(min=0)) @ self.model.weights

    def served_scores(self, users: np.ndarray, candidates: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """The scores the policy ranks by: this stand-in's own (it has no served funnel to follow)."""
        return self.scores(users, candidates) if scores is None else scores

    def rank(self, users: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Each user's pool [B, N] ordered by score, best first (rank_pool)."""
        return rank_pool(self.scores(users, pool), pool)


class FunnelRanker:
    """The pipeline's trained ranker (components.ranking's Ranker API) as the new policy: it scores each pool
    item from the user's latest history (the last max_len steps of the event log, as the features stage
    builds them). World items map to the features vocabulary; items outside it are OOV.

    With the events' types and times, the ranker also reads each step's event types and gap and the request's gap
    at the log's end (histories.user_behaviour), as the export serves it.

    As a policy it ranks as the served funnel does: an item the user already had in the logged events comes after
    every item they did not (serving.funnel.mask_seen masks the history out of every served list), so its own top
    K (the bandit study's greedy, OPE's new policy) is the funnel's list. On the default shop 37% of a pool's items
    are in the user's history and clicked less (true relevance 0.28 against 0.38); DIEN, which reads history
    matches, put them in 56% of its slates and collected fewer clicks than random slates.

    The histories do not change during a study, so a (user, item) score never changes either: scores are
    cached, and only pairs not seen before go through the model (DIEN's AUGRU runs once per candidate)."""

    def __init__(
        self,
        ranker,
        hist_items: np.ndarray,
        hist_cats: np.ndarray,
        vocab_index: np.ndarray,
        behaviour=None,
        seen_keys: np.ndarray | None = None,
    ):
        self.ranker = ranker  # .score(hist_items, hist_cats, cand_items, cand_cats[, behaviour]) and .item_category
        self.hist_items = hist_items  # [U, L] vocabulary indices per world user, left-padded
        self.hist_cats = hist_cats
        self.behaviour = behaviour  # serving.funnel.Behaviour [U, L] aligned with hist_items, or None (unknown)
        self.vocab_index = vocab_index  # [I] vocabulary index of each world item
        # sorted user * I + item (world indices) of every (user, item) in the logged events: what the funnel masks
        self.seen_keys = np.zeros(0, np.int64) if seen_keys is None else seen_keys
        self._keys = np.zeros(0, np.int64)  # sorted user * I + item
        self._values = np.zeros(0, np.float64)

    @classmethod
    def build(
        cls, ranker, world: synthetic.ShopWorld, events: LoggedEvents, item_vocab: list[str], max_len: int
    ) -> FunnelRanker:
        """The trained ranker on the world's users: their histories from the shop's events in the features
        vocabulary, with each step's event types and gaps."""
        index = {item: i + schema.NUM_RESERVED for i, item in enumerate(item_vocab)}
        vocab_index = np.array([index.get(item, schema.OOV_INDEX) for item in world.item_ids], dtype=np.int64)
        users, items = events.user.astype(np.int64), vocab_index[events.item]
        rows, hist, cats = histories_of(users, items, ranker.item_category, max_len)
        row_of_user = pd.Index(list(rows)).get_indexer(np.arange(len(world.user_ids)))
        known = row_of_user[:, None] >= 0
        hist_items = np.where(known, hist[row_of_user.clip(min=0)], schema.PAD_INDEX)
        hist_cats = np.where(known, cats[row_of_user.clip(min=0)], schema.PAD_INDEX)
        flags = type_flags(synthetic.EVENT_NAMES)[events.kind]
        steps = behaviour_of(users, items, flags, events.seconds, rows, max_len).take(row_of_user.clip(min=0))
        behaviour = type(steps)(
            np.where(known, steps.types, 0),
            np.where(known, steps.gaps, schema.NO_GAP),
            np.where(known[:, 0], steps.request_gap, schema.NO_GAP),
        )
        seen_keys = np.unique(users * len(world.item_ids) + events.item)
        return cls(ranker, hist_items, hist_cats, vocab_index, behaviour, seen_keys)

    def scores(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Scores [B, N] of candidates [B, N] for users [B]; each (user, item) pair is scored once and cached."""
        items = candidates.clip(min=0)
        keys = users[:, None].astype(np.int64) * len(self.vocab_index) + items
        missing = np.unique(keys[~self._cached(keys)])
        if missing.size:
            self._add(missing, self._score_pairs(missing // len(self.vocab_index), missing % len(self.vocab_index)))
        return self._values[np.searchsorted(self._keys, keys)]

    def _cached(self, keys: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self._keys, keys).clip(max=max(len(self._keys) - 1, 0))
        return (self._keys[pos] == keys) if len(self._keys) else np.zeros(keys.shape, bool)

    def _add(self, keys: np.ndarray, values: np.ndarray) -> None:
        merged = np.concatenate([self._keys, keys])
        order = np.argsort(merged, kind="stable")
        self._keys, self._values = merged[order], np.concatenate([self._values, values])[order]

    def _score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of (user, item) pairs sorted by user: one model row per user, its items padded by repetition."""
        starts = np.r_[0, np.nonzero(np.diff(users))[0] + 1]
        counts = np.diff(np.r_[starts, len(users)])
        slot = np.arange(len(users)) - np.repeat(starts, counts)
        table = np.repeat(items[starts][:, None], counts.max(), axis=1)
        table[np.repeat(np.arange(len(starts)), counts), slot] = items
        cand = self.vocab_index[table]
        row_users = users[starts]
        scored = funnel.ranker_scores(
            self.ranker,
            self.hist_items[row_users],
            self.hist_cats[row_users],
            cand,
            self.ranker.item_category[cand],
            None if self.behaviour is None else self.behaviour.take(row_users),
        ).astype(np.float64)
        return scored[np.repeat(np.arange(len(starts)), counts), slot]

    def seen(self, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """bool [B, N]: candidates [B, N] (-1 padding) that users [B] already had in the logged events."""
        keys = users[:, None].astype(np.int64) * len(self.vocab_index) + candidates.clip(min=0)
        if not len(self.seen_keys):
            return np.zeros(keys.shape, bool)
        found = self.seen_keys[np.searchsorted(self.seen_keys, keys).clip(max=len(self.seen_keys) - 1)] == keys
        return found & (candidates >= 0)

    def served_scores(self, users: np.ndarray, candidates: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """The ranker's scores with every item the user already had moved below all the others, in their own order:
        the order the served funnel gives (the class docstring). `scores`: scores(users, candidates), if at hand."""
        scores = self.scores(users, candidates) if scores is None else scores
        seen = self.seen(users, candidates)
        if not seen.any():
            return scores
        return np.where(seen, scores - (float(np.ptp(scores)) + 1.0), scores)

    def rank(self, users: np.ndarray, pool: np.ndarray) -> np.ndarray:
        """Each user's pool [B, N] in the served funnel's order, best first (served_scores, rank_pool)."""
        return rank_pool(self.served_scores(users, pool), pool)


def true_value(
    world: synthetic.ShopWorld,
    users: np.ndarray,
    policy: ope.SlatePolicy,
    weights: rewards.RewardWeights = rewards.CLICK,
) -> float:
    """The policy's exact reward per slot on these requests: sum_k sum_i pi(i at k) E[reward | i at k] / K (the
    click rate for click-only weights)."""
    items = policy.candidates.clip(min=0)
    examined = world.examination[: policy.slate_size]
    click = world.relevance(users, items)[:, :, None] * examined
    mute = world.dismissal(users, items)[:, :, None] * examined if weights.needs_mutes else np.zeros_like(click)
    return float(np.sum(policy.marginals * weights.expected(click, mute)) / (len(users) * policy.slate_size))


def ope_features(history: ObservedHistory, users: np.ndarray) -> ope.FeatureFn:
    """The reward model's view of (request, item): the observable features of the request's user and the item."""
    return lambda requests, items: history.features(users[requests], items)


def category_share(categories: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float [B, N]: the share of each row's valid candidates in candidate j's category (categories [B, N]). The
    shop fills part of its pool from the user's current interest, so the pool's make-up is a within-request view
    of an interest that the logged history no longer shows."""
    same = (categories[:, :, None] == categories[:, None, :]) & valid[:, None, :]
    return same.sum(axis=2) / np.maximum(valid.sum(axis=1, keepdims=True), 1)


@dataclasses.dataclass(frozen=True)
class ShopProposer:
    """Bandit proposals in the shop: the shop's candidate pool, contexts = [features, category one-hot, ranker
    score, 1] and the ranker's served scores (the greedy policy: the funnel's own order, served_scores). Requests start a session (interest drifts). The FM's
    categorical fields (beside user and item id): the item's category, the user's most viewed category in the
    logged history (a user feature) and the category of the user's last logged view (context). In a StyledShop the
    contexts also carry the item style's one-hot (after the category's), and the fields the user's segment and the
    item's style: every learner sees both observables, only the FM crosses them."""

    ranker: LinearRanker | FunnelRanker
    history: ObservedHistory
    pool_share: bool = False  # add each candidate's category share among the request's valid candidates
    crosses: bool = True  # False: leave out the features that cross the user's history with the item (CROSSES)

    def __call__(self, world: synthetic.ShopWorld, users: np.ndarray, rng: np.random.Generator) -> Proposal:
        world.drift(np.unique(users), rng)
        pool, valid = world.candidates(users, rng)
        candidates = np.where(valid, pool, -1)
        scores = self.ranker.scores(users, candidates)
        extra = [category_share(self.history.item_category[pool], valid)[..., None]] if self.pool_share else []
        extra.append(np.eye(world.config.n_categories)[self.history.item_category[pool]])
        styled = isinstance(world, StyledShop)
        if styled:
            extra.append(np.eye(world.style_affinity.shape[1])[world.item_style[pool]])
        features = self.history.features(users, pool)
        if not self.crosses:
            features = features[..., [i for i, name in enumerate(FEATURE_NAMES) if name not in CROSSES]]
        contexts = np.concatenate([features, *extra, scores[..., None], np.ones(scores.shape + (1,))], axis=-1)
        n_cats = world.config.n_categories
        top = self.history.user_category_share[users].argmax(axis=1)
        last = self.history.last_item[users]
        last_cat = np.where(last >= 0, self.history.item_category[last.clip(min=0)], n_cats)  # n_cats = none
        columns = [
            self.history.item_category[pool],
            np.broadcast_to(top[:, None], pool.shape),
            np.broadcast_to(last_cat[:, None], pool.shape),
        ]
        if styled:
            columns += [np.broadcast_to(world.user_segment[users][:, None], pool.shape), world.item_style[pool]]
        served = self.ranker.served_scores(users, candidates, scores)
        return Proposal(candidates, contexts, served, np.stack(columns, axis=-1))
