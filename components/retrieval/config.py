"""The retrieval stage's settings: one frozen dataclass, written beside the model it trained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components import schema
from components.features.reader import BUCKET_ROWS, TRAIN_INPUTS

ENCODERS = ("self_attention", "gru", "mean", "filter")
LOSSES = ("in_batch", "full_softmax", "mixed")
POSITIONS = ("absolute", "lag")
LR_SCHEDULES = ("constant", "cosine")
CONFIG_FILE = schema.RETRIEVAL_CONFIG_FILE
# what an artifact written before a field existed was trained with (its config.json does not name the field)
UNRECORDED = {
    "positions": "absolute",
    "time_gaps": False,
    "item_features": True,
    "weight_decay": 0.0,
    "lr_schedule": "constant",
    "refit_epochs": 0,
    "train_input": "memory",
    "valid_max_users": 0,
}


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Defaults are the ones the pipeline ships; they were chosen on Beauty's valid split."""

    encoder: str = "gru"  # the query tower's sequence encoder, one of ENCODERS (GRU: best on Beauty valid)
    # in_batch: softmax over the batch's targets (logQ-corrected); full_softmax: over every item;
    # mixed: the batch's targets plus num_negatives uniformly sampled items, logQ of the mixture on both
    loss: str = "in_batch"
    num_negatives: int = 256  # uniform negatives per batch of the mixed loss, shared by its rows
    # train on every step of each user's train sequence (a loss at each step of the causal encoder)
    # instead of one example per prefix; batch_size then counts user sequences
    every_position: bool = False
    # the width of every table, the GRU's state and the query projection. Beauty valid NDCG@20 at 64 / 128, seeds
    # 0, 1, 2: 0.0857 / 0.0888, 0.0850 / 0.0881, 0.0843 / 0.0883 (~30 CPU s an epoch vs ~13)
    embedding_dim: int = 128
    max_len: int = 20  # history steps the query tower reads (the most recent ones)
    num_blocks: int = 2  # self-attention blocks
    num_heads: int = 2
    # self-attention / filter: "absolute" position embeddings from the oldest step, or "lag": a learned attention
    # bias per head and steps back, which tells each step how recent the others are (see towers.RecencyAttention)
    positions: str = "absolute"
    filter_mix: float = 0.7  # filter encoder: weight of the causal filter beside attention (BSARec's Beauty alpha)
    dropout: float = 0.3
    batch_size: int = 1024  # examples per batch: also the in-batch candidates of each query
    learning_rate: float = 2e-3
    # constant: learning_rate throughout; cosine: from learning_rate down to 0 along a half cosine over the `epochs`
    # cap's gradient steps (early stopping may end sooner, at a learning rate not yet 0)
    lr_schedule: str = "constant"
    epochs: int = 12  # upper bound; early stopping on valid may end sooner
    patience: int = 2  # epochs without a better valid NDCG@20 before stopping
    # after the epoch is selected on valid, the selected model trains on for this many epochs with the valid examples
    # as new rows (plus warm_replay of train), a warm start whose new day is the valid window: the served (and tested)
    # model is then trained through each user's last event before the test one, as a shop's model is trained through
    # yesterday. 0: the selected model as is. Beauty, seed 0, test HIT@20 / NDCG@20: 0.1312 / 0.0664 -> 0.1437 / 0.0715
    # for 35 CPU s more (466 for the selection run); the 2 epochs are the lifecycle's warm-start setting
    refit_epochs: int = 2
    normalize: bool = True  # score by cosine (L2-normalised embeddings) rather than raw dot product
    temperature: float = 0.1  # softmax temperature over the scores
    logq_correction: bool = True  # Yi et al. 2019: subtract log sampling probability from logits
    # Adam's decoupled weight decay (AdamW) on every weight; 0: plain Adam
    weight_decay: float = 0.0
    # the candidate tower's side features (category, brand, price rows added to the id row); False: the id row alone,
    # the item table shared with the query tower's input as in SASRec (a new item then has no features to fall back on)
    item_features: bool = True
    # the query tower reads time: a learned vector per log2 bucket of each step's gap (features.behaviour) added to
    # that step, and one of the request gap (time since the last step; at every position, the gap to the next step)
    # added to the encoder's output; the query signature then takes hist_gaps and request_gap too.
    # Beauty, seed 0: valid NDCG@20 0.0818 -> 0.0857 (HIT@20 0.1583 -> 0.1659)
    time_gaps: bool = True
    seed: int = 0
    # a warm start's epochs: the train examples its parent did not train on (the days after its cut) plus this share of
    # the ones it did, drawn afresh each epoch (a replay against forgetting); 1.0: every example, as a cold run.
    # Needs a parent that recorded its examples' keys (warm_start.TRAIN_KEYS); at every_position, every sequence
    warm_replay: float = 0.2
    # an item without a train target (a new item) is scored by its features alone, not by its untrained id row
    features_only_unseen: bool = True
    # in training, each candidate row's id row is dropped with this probability, so that the feature rows alone (what
    # a new item has) learn to score an item; 0: off
    id_dropout: float = 0.0
    # the train split in memory ("memory", in one canonical order) or streamed from user buckets on local disk
    # ("stream": one bucket of about stream_bucket_rows examples in memory at a time); "auto" streams above
    # reader.STREAM_ABOVE train examples, so the default and medium shops train as before and the large one streams
    train_input: str = "auto"
    stream_bucket_rows: int = BUCKET_ROWS
    # valid users each epoch's full-catalogue validation (the selection) scores, those whose ids hash lowest
    # (metrics.sample_users: the same users every epoch and run); 0 = every one. It costs users x items per epoch: a
    # shop with hundreds of thousands of users sets it. The refit still trains on every user's valid row. The ranker's
    # fusion weight (serving.fusion.choose_on_split), the funnel's selection on valid, reads it here too. It counts
    # examples (metrics.sample_users takes rows by their user's hash): one per user under leave_last_out; a time
    # split's valid window holds several per user, and the last user taken may keep only some of them.
    valid_max_users: int = 0

    def __post_init__(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; expected one of {ENCODERS}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; expected one of {LOSSES}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; expected one of {LR_SCHEDULES}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}; expected one of {POSITIONS}")
        if self.embedding_dim % self.num_heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} is not divisible by num_heads {self.num_heads}")
        if not 0 < self.warm_replay <= 1:
            raise ValueError(f"warm_replay must be in (0, 1], got {self.warm_replay}")
        if not 0 <= self.id_dropout < 1:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.refit_epochs < 0:
            raise ValueError(f"refit_epochs must be >= 0, got {self.refit_epochs}")
        if self.train_input not in TRAIN_INPUTS:
            raise ValueError(f"unknown train_input {self.train_input!r}; expected one of {TRAIN_INPUTS}")
        if self.valid_max_users < 0:
            raise ValueError(f"valid_max_users must be 0 (every valid user) or a count, got {self.valid_max_users}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in (
            "embedding_dim",
            "max_len",
            "batch_size",
            "epochs",
            "patience",
            "num_negatives",
            "stream_bucket_rows",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def write(self, directory: str | Path) -> None:
        """config.json of a retrieval artifact (schema.RetrievalModelConfig, the contract the later stages read)."""
        schema.RetrievalModelConfig(dataclasses.asdict(self)).write(directory)

    @classmethod
    def read(cls, directory: str | Path) -> RetrievalConfig:
        """The settings a retrieval artifact was trained with; another config_version is a SchemaError."""
        return cls(**{**UNRECORDED, **schema.RetrievalModelConfig.read(directory).config})
