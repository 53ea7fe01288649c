"""What DIN, DIEN and the reference share: embeddings, the prediction head, and the split between
encoding a user's history once and scoring candidates against it.

Training calls the same two steps with one candidate per user, so the served score is the trained
function, not a re-implementation of it.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from components import schema
from components.features.behaviour import NUM_GAP_BUCKETS, gap_buckets
from components.ranking.context import CandidateContext, ItemStatistics
from components.ranking.embedding import ItemCategoryEmbedding
from components.ranking.mlp import PredictionMLP

MODEL_TYPES = ("dien", "din", "reference_gru")
# What the rankers may read of a history's behaviour (schema.HIST_TYPES, HIST_GAPS, TARGET_GAP): each step's event
# types and its gap from the step before, each added to the step's item vector as a learned vector of the same width
# (so DIN's attention and DIEN's GRU read them, with the same layers), and the gap from the last step to the request,
# an input of the head beside the interest.
BEHAVIOUR = ("event_type", "gap", "request_gap")
# A train row's negatives [rows, M] beside its target (built by the ranking stage, not by the features job).
NEGATIVE_ITEMS = "negative_items"
NEGATIVE_CATS = "negative_cats"
BEHAVIOUR_INPUTS = (schema.HIST_TYPES, schema.HIST_GAPS, schema.TARGET_GAP)  # what `behaviour` dicts hold
MATCH_FEATURES = ("in_history", "log_count", "recency", *(f"as_{kind}" for kind in schema.EVENT_TYPES))
MATCH_DECAY = 0.7  # recency of the latest same-item step: MATCH_DECAY ** (real steps after it)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters; defaults follow the DIEN paper (18-d item and category embeddings, MLP 200-80)."""

    model_type: str = "dien"
    embedding_dim: int = 18  # per field; the history step is item + category = 36 wide, as is the GRU
    mlp_units: tuple = (200, 80)
    activation: str = "dice"  # "dice" | "prelu"
    aux_weight: float = 1.0  # alpha; 0 disables the auxiliary loss
    aux_scorer: str = "dot"  # "dot" (paper eq. 3) | "mlp" (authors' code)
    dien_attention: str = "bilinear"  # "bilinear" (paper eq. 5) | "mlp"
    din_attention_units: tuple = (80, 40)
    behaviour: tuple = BEHAVIOUR  # which of BEHAVIOUR the model reads
    # Each candidate's own past in the history (history_match): whether and how often the user's steps hold the same
    # item, how recently, and with which event types. Attention over item embeddings does not learn identity from
    # few examples: on the Taobao sample's cvr rows the count alone scores test AUC 0.70, DIEN without it 0.50.
    history_match: bool = True

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unknown model_type {self.model_type!r}; expected one of {MODEL_TYPES}")
        unknown = sorted(set(self.behaviour) - set(BEHAVIOUR))
        if unknown:
            raise ValueError(f"unknown behaviour feature(s) {unknown}; expected some of {BEHAVIOUR}")
        object.__setattr__(self, "behaviour", tuple(name for name in BEHAVIOUR if name in self.behaviour))

    @property
    def hidden_units(self) -> int:
        """The GRU and attention width: twice the embedding size, the size of an item and category vector together."""
        return 2 * self.embedding_dim


def history_mask(hist_items: tf.Tensor) -> tf.Tensor:
    """1.0 on real steps, 0.0 on padding (index 0), wherever the padding is."""
    return tf.cast(tf.not_equal(hist_items, schema.PAD_INDEX), tf.float32)


def masked_mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The mean [B, D] of values [B, T, D] over the real steps (mask [B, T]); 0 for an empty history."""
    total = tf.reduce_sum(values * mask[..., None], axis=1)
    return tf.math.divide_no_nan(total, tf.reduce_sum(mask, axis=1, keepdims=True))


def history_match(hist_items, hist_types, mask, candidates) -> tf.Tensor:
    """[B, N, len(MATCH_FEATURES)]: for candidates [B, N], their steps in the history [B, T] (mask [B, T], any
    padding side): in_history (0/1), log(1 + count), recency (MATCH_DECAY ** real steps after the latest one, 0 when
    none) and, per event type, 1 when any of those steps holds it (hist_types' flags; 0 = unknown adds none)."""
    same = tf.cast(tf.equal(hist_items[:, None, :], candidates[:, :, None]), tf.float32) * mask[:, None, :]
    count = tf.reduce_sum(same, axis=2)
    after = tf.cumsum(mask, axis=1, reverse=True, exclusive=True)[:, None, :]
    recency = tf.reduce_max(same * tf.pow(tf.constant(MATCH_DECAY, tf.float32), after), axis=2)
    flags = tf.cast(hist_types, tf.int32)[:, None, :]
    kinds = [
        tf.reduce_max(same * tf.cast(tf.bitwise.bitwise_and(flags, 1 << k) > 0, tf.float32), axis=2)
        for k in range(len(schema.EVENT_TYPES))
    ]
    return tf.stack([tf.cast(count > 0, tf.float32), tf.math.log1p(count), recency, *kinds], axis=-1)


def unknown_behaviour(hist_items: tf.Tensor) -> dict:
    """The behaviour of a history [B, T] whose event types and times nobody gave: type 0 and NO_GAP everywhere."""
    no_gap = tf.constant(schema.NO_GAP, tf.int64)
    return {
        schema.HIST_TYPES: tf.zeros_like(hist_items),
        schema.HIST_GAPS: tf.fill(tf.shape(hist_items), no_gap),
        schema.TARGET_GAP: tf.fill(tf.shape(hist_items)[:1], no_gap),
    }


class SequenceRanker(tf.keras.Model):
    """P(buy | history, target). Subclasses define `encode_user` (once per user) and `interest` (per candidate).

    Features: hist_items/hist_cats [B, T] int64 (0 = padding), hist_types/hist_gaps [B, T] (schema.py),
    target_item/target_cat/target_gap [B]. `call` returns logits [B].
    With `statistics`, every candidate also gets the context features of context.py, fed to the head and to a
    linear term beside it (wide and deep), so DIN and DIEN see the same evidence; `config.behaviour` says which
    behaviour features both read (embed_history, encode).
    """

    def __init__(
        self,
        num_items: int,
        num_categories: int,
        config: ModelConfig,
        statistics: ItemStatistics | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.config = config
        self.embedding = ItemCategoryEmbedding(num_items, num_categories, config.embedding_dim)
        self.head = PredictionMLP(config.mlp_units, config.activation)
        self.context = CandidateContext(statistics) if statistics is not None else None
        has_context = statistics is not None or config.history_match
        self.wide = tf.keras.layers.Dense(1, name="context_wide") if has_context else None
        width, reads = self.embedding.output_dim, set(config.behaviour)
        self.type_vectors = (
            tf.keras.layers.Embedding(schema.NUM_TYPE_CODES, width, name="event_types")
            if "event_type" in reads
            else None
        )
        self.gap_vectors = tf.keras.layers.Embedding(NUM_GAP_BUCKETS, width, name="gaps") if "gap" in reads else None
        self.request_vectors = (
            tf.keras.layers.Embedding(NUM_GAP_BUCKETS, config.embedding_dim, name="request_gap")
            if "request_gap" in reads
            else None
        )

    def encode_user(self, hist_items, hist_cats, behaviour: dict, training=None) -> dict:
        """What a user's history [B, T] gives every candidate (states, masks, ...); subclasses compute it once per
        user. `behaviour` holds the history's HIST_TYPES and HIST_GAPS [B, T] (embed_history reads them)."""
        raise NotImplementedError

    def encode(self, hist_items, hist_cats, behaviour: dict | None = None, training=None) -> dict:
        """encode_user, plus the request-gap vector [B, dim] the head reads when the model has it. Without
        `behaviour` (a caller that knows only the items), every step's type and gap are unknown."""
        behaviour = behaviour or unknown_behaviour(hist_items)
        user = self.encode_user(hist_items, hist_cats, behaviour, training=training)
        if self.request_vectors is not None:
            user["request"] = self.request_vectors(gap_buckets(behaviour[schema.TARGET_GAP]))
        return user

    def interest(self, user: dict, candidates: tf.Tensor, training=None) -> tf.Tensor:
        """The user's interest in each candidate: candidates [B, N, D] -> [B, N, H]."""
        raise NotImplementedError

    def embed_history(self, hist_items, hist_cats, behaviour: dict) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The history's steps [B, T, 2 * dim] (item and category vectors plus, as configured, the vectors of the
        step's event types and gap), the item and category vectors alone [B, T, 2 * dim] (what DIEN's auxiliary loss
        compares with the no-click items, which have no behaviour) and the mask [B, T] (1 = a real step). Type 0
        (unknown) adds nothing."""
        items = self.embedding((hist_items, hist_cats))
        steps = items
        if self.type_vectors is not None:
            types = tf.clip_by_value(behaviour[schema.HIST_TYPES], 0, schema.NUM_TYPE_CODES - 1)
            steps += self.type_vectors(types) * tf.cast(types > 0, tf.float32)[..., None]
        if self.gap_vectors is not None:
            steps += self.gap_vectors(gap_buckets(behaviour[schema.HIST_GAPS]))
        return steps, items, history_mask(hist_items)

    def candidate_logits(
        self, user: dict, candidates: tf.Tensor, context: tf.Tensor | None = None, training=None
    ) -> tf.Tensor:
        """Logits [B, N] of candidates [B, N, D] for users encoded by `encode_user`.

        Head input as in the authors' code: [target, interest, history mean, target * history mean], plus the
        candidates' context features [B, N, F] when the model has them.
        """
        interest = self.interest(user, candidates, training=training)
        mean = tf.broadcast_to(user["history_mean"][:, None, :], tf.shape(candidates))
        parts = [candidates, interest, mean, candidates * mean]
        if "request" in user:
            shape = tf.concat([tf.shape(candidates)[:2], tf.shape(user["request"])[1:]], axis=0)
            parts.append(tf.broadcast_to(user["request"][:, None, :], shape))
        if context is None:
            return self.head(tf.concat(parts, axis=-1), training=training)
        return self.head(tf.concat(parts + [context], axis=-1), training=training) + self.wide(context)[..., 0]

    def candidate_context(
        self, hist_items, hist_cats, cand_items, cand_cats, leave_out=None, hist_types=None
    ) -> tf.Tensor | None:
        """Context features [B, N, F] of candidates [B, N]: context.py's (with statistics), then the history match
        (config.history_match; `hist_types` [B, T], None = unknown, read as the model's behaviour says); None for a
        model with neither."""
        mask, parts = history_mask(hist_items), []
        if self.context is not None:
            parts.append(self.context(hist_items, hist_cats, mask, cand_items, cand_cats, leave_out))
        if self.config.history_match:
            # the event-type flags only for a model that reads event types (config.behaviour)
            reads_types = hist_types is not None and "event_type" in self.config.behaviour
            types = hist_types if reads_types else tf.zeros_like(hist_items)
            parts.append(history_match(hist_items, types, mask, cand_items))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

    def score_indices(self, hist_items, hist_cats, cand_items, cand_cats, behaviour: dict | None = None) -> tf.Tensor:
        """Probabilities [B, N]: the history is encoded once per user, then every candidate is scored. `behaviour`:
        HIST_TYPES, HIST_GAPS [B, T] and TARGET_GAP [B] (the request's), or None where they are unknown."""
        user = self.encode(hist_items, hist_cats, behaviour, training=False)
        candidates = self.embedding((cand_items, cand_cats))
        types = behaviour[schema.HIST_TYPES] if behaviour is not None else None
        context = self.candidate_context(hist_items, hist_cats, cand_items, cand_cats, hist_types=types)
        return tf.sigmoid(self.candidate_logits(user, candidates, context, training=False))

    def call(self, features, training=None):
        """Logits [B] of each row's target; with negatives [B, M] in the features (train rows), logits [B, 1 + M]
        of the row's list: its target, then its negatives. A train row's target is its own train step, so that
        step is left out of the context counts; a held-out row's is not counted anyway."""
        items, cats = features[schema.TARGET_ITEM][:, None], features[schema.TARGET_CAT][:, None]
        if NEGATIVE_ITEMS not in features:
            return self._logits(features, items, cats, None, training)[:, 0]
        items = tf.concat([items, features[NEGATIVE_ITEMS]], axis=1)
        cats = tf.concat([cats, features[NEGATIVE_CATS]], axis=1)
        leave_out = tf.one_hot(tf.zeros_like(features[schema.TARGET_ITEM]), tf.shape(items)[1])
        return self._logits(features, items, cats, leave_out, training)

    def _logits(self, features, items, cats, leave_out, training):
        hist_items, hist_cats = features[schema.HIST_ITEMS], features[schema.HIST_CATS]
        behaviour = {name: features[name] for name in BEHAVIOUR_INPUTS} if schema.HIST_TYPES in features else None
        user = self.encode(hist_items, hist_cats, behaviour, training=training)
        if training:
            self.add_auxiliary_loss(user, features)
        types = behaviour[schema.HIST_TYPES] if behaviour is not None else None
        context = self.candidate_context(hist_items, hist_cats, items, cats, leave_out, types)
        return self.candidate_logits(user, self.embedding((items, cats)), context, training=training)

    def add_auxiliary_loss(self, user: dict, features: dict) -> None:
        """Models with an auxiliary objective add it here (training only)."""
        del user, features
