"""Training, timing, prediction and test metrics of one ranking model."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from components import distribution, metrics, progress, schema
from components.features import reader
from components.features.sequences import PopularitySampler
from components.ranking.base import NEGATIVE_CATS, NEGATIVE_ITEMS, ModelConfig, SequenceRanker
from components.ranking.context import FEATURES as CONTEXT_FEATURES
from components.ranking.context import ItemStatistics, item_brands
from components.ranking.data import (
    SEQUENCES,
    RankingData,
    SplitChunks,
    StreamedRanking,
    bucketed_dataset,
    concatenate,
    listed,
    load_split,
    read_batches,
    rows_in_order,
    take_rows,
    write_bucket,
)
from components.ranking.dien import DIEN
from components.ranking.din import DIN
from components.ranking.export import (
    Ranker,
    export_ranker,
    item_category_table,
    load_ranker,
    ranker_module,
    write_fusion,
)
from components.ranking.hard_negatives import hard_negative_lists
from components.ranking.reference_gru import ReferenceGRU
from components.serving.fusion import choose_on_split

log = logging.getLogger(__name__)

MODELS = {"dien": DIEN, "din": DIN, "reference_gru": ReferenceGRU}
WARMUP_BATCHES = 20  # per epoch, left out of throughput (tracing, dataset start); at most half the epoch
REFIT_KEY = (1 << 30,)  # the key of the valid steps' negative draws, apart from every streamed bucket's (0, 1, ...)
REFIT_REPLAY_DRAW = 29  # the generator stream of the refit's replay draw


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # At most: the weights of the best epoch on valid are kept. Not 2: on Amazon Beauty with hard negatives DIN and
    # DIEN without aux loss peaked at epoch 2 in every seed, but DIEN at epoch 3 in 2 of 3 seeds (valid AUC dips at
    # epoch 2), and with 2 epochs its median test AUC fell by 0.0055 and its spread tripled.
    epochs: int = 3
    # Stop once valid AUC has not improved for this many epochs (None: run all `epochs`).
    patience: int | None = None
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    # Each train step's list: its target, then (with a retrieval model) this many negatives drawn from the
    # retriever's top `hard_negative_pool` for the same history, then this many popularity-sampled negatives.
    hard_negatives: int = 1
    hard_negative_pool: int = 100
    popularity_negatives: int = 1
    # With a retrieval model, this many negatives first from the retriever's top `near_pool` (the candidates the
    # funnel re-ranks), sampled "uniform" or by "rank" (probability 1 / (1 + rank): hard_negatives.NEAR_SAMPLING);
    # the `hard_negatives` are then drawn from ranks near_pool..hard_negative_pool instead of the whole top.
    # Chosen on valid (seed 0, bench/ranker_study.py, funnel NDCG@20 at N=200): 1 near (listwise only) + 1 far + 1
    # popular, gap-reading queries: shop 0.4805 vs 0.4707 with the lists before (1 hard from the top-100 + 1
    # popular), Beauty 0.0908 vs 0.0909; 2 near: shop 0.4839, Beauty 0.0901; no popular item (far from ranks
    # 20-200): shop 0.5024 but Beauty 0.0888 and its valid AUC 0.6546 (vs 0.8009). Shop test, seeds 0-2: funnel
    # 0.4852 / 0.4850 / 0.4809 vs retrieval 0.4702 / 0.4689 / 0.4687.
    near_negatives: int = 1
    near_pool: int = 20
    near_sampling: str = "uniform"
    # False: the near negatives enter the listwise term only (the pointwise loss, the buy-or-not probability, reads
    # the target, the far and the popular negatives: the label distribution valid's AUC and the calibration see).
    near_pointwise: bool = False
    # The hard negatives' queries read the rows' time gaps, as the funnel's retrieval query does at serving (for a
    # retrieval model that reads time); False: the histories' items alone.
    hard_negative_gaps: bool = True
    # Loss = pointwise log loss over the list's entries (target labelled as the row, negatives 0: the calibrated
    # buy-or-not probability) + this times the softmax cross-entropy of the target against its list (the order
    # the funnel needs).
    listwise_weight: float = 1.0
    # The train split in memory ("memory") or streamed from user buckets on local disk ("stream": one bucket of about
    # stream_bucket_rows rows in memory at a time, its hard negatives drawn for it alone); "auto" streams above
    # reader.STREAM_ABOVE train rows, so the default and medium shops train in memory as before.
    train_input: str = "auto"
    stream_bucket_rows: int = reader.BUCKET_ROWS
    # After the epoch is selected on valid, the selected model trains on for this many epochs on the valid split's
    # steps plus a warm_start.WARM_REPLAY share of the train rows (refit_through_valid), a warm start whose new day is
    # the valid window, as retrieval's refit_epochs: the served and tested ranker has then trained through each user's
    # last step before the test one, as the retriever whose candidates it re-ranks has. 0: the selected model as is.
    # The 2 epochs and the 0.2 replay are the lifecycle's warm-start settings, not tuned on test.
    refit_epochs: int = 2

    def __post_init__(self):
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be None or >= 1, got {self.patience}")
        if self.near_negatives < 0 or (self.near_negatives and self.near_pool < self.near_negatives):
            raise ValueError(f"near_negatives must be in [0, near_pool], got {self.near_negatives} of {self.near_pool}")
        if self.train_input not in reader.TRAIN_INPUTS:
            raise ValueError(f"unknown train_input {self.train_input!r}; expected one of {reader.TRAIN_INPUTS}")
        if self.stream_bucket_rows < 1:
            raise ValueError(f"stream_bucket_rows must be positive, got {self.stream_bucket_rows}")
        if self.refit_epochs < 0:
            raise ValueError(f"refit_epochs must be >= 0, got {self.refit_epochs}")


def build_model(
    config: ModelConfig, num_items: int, num_categories: int, statistics: ItemStatistics | None = None
) -> SequenceRanker:
    """A fresh ranker of config.model_type sized to the vocabularies (with the train statistics its context reads),
    made under the trainers' strategy (components/distribution.py: MirroredStrategy on a multi-GPU machine), which
    its variables and its optimizer's are then created in (create_variables, make_train_step)."""
    with distribution.strategy().scope():
        return MODELS[config.model_type](num_items, num_categories, config, statistics=statistics)


def create_variables(model: SequenceRanker) -> None:
    """Creates the model's variables eagerly, under the strategy it was made in, before a step or a copy traces."""
    with model.distribute_strategy.scope():
        model(_example_features(), training=False)


FEATURE_SIGNATURE = {
    **{name: tf.TensorSpec([None, None], tf.int64) for name in SEQUENCES},
    **{
        name: tf.TensorSpec([None], tf.int64)
        for name in (schema.USER, schema.TARGET_ITEM, schema.TARGET_CAT, schema.TARGET_GAP)
    },
}
LIST_FEATURE_SIGNATURE = {
    **FEATURE_SIGNATURE,
    **{name: tf.TensorSpec([None, None], tf.int64) for name in (NEGATIVE_ITEMS, NEGATIVE_CATS)},
}
LABEL_SIGNATURE = tf.TensorSpec([None], tf.float32)


def _example_features() -> dict:
    """Two rows of padding-only history: enough to create the model's variables eagerly before tracing."""
    features = {name: tf.zeros([2, 2], tf.int64) for name in SEQUENCES}
    features.update(
        {
            name: tf.fill([2], tf.constant(schema.OOV_INDEX, tf.int64))
            for name in (schema.USER, schema.TARGET_ITEM, schema.TARGET_CAT, schema.TARGET_GAP)
        }
    )
    return features


def list_loss(
    logits: tf.Tensor, labels: tf.Tensor, listwise_weight: float, pointwise_columns: tuple[bool, ...] | None = None
) -> tf.Tensor:
    """logits [B, 1 + M] of (target, negatives); labels [B] of the targets. Mean log loss over every entry (the
    negatives labelled 0) + listwise_weight * mean softmax cross-entropy of the target within its list.
    `pointwise_columns` (1 + M bools, None: all): the entries the log loss reads; the softmax reads them all."""
    entry_labels = tf.concat([labels[:, None], tf.zeros_like(logits[:, 1:])], axis=1)
    entry_losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=entry_labels, logits=logits)
    if pointwise_columns is None:
        pointwise = tf.reduce_mean(entry_losses)
    else:
        mask = tf.constant(pointwise_columns, tf.float32)
        pointwise = tf.reduce_mean(tf.reduce_sum(entry_losses * mask, axis=1)) / tf.reduce_sum(mask)
    listwise = -tf.reduce_mean(tf.nn.log_softmax(logits, axis=1)[:, 0])
    return pointwise + listwise_weight * listwise


def make_list_step(
    model: SequenceRanker,
    learning_rate: float,
    listwise_weight: float,
    pointwise_columns: tuple[bool, ...] | None = None,
    signature=None,
):
    """make_train_step for train rows with negative lists (list_loss), traced once."""
    return _compiled_step(
        model,
        learning_rate,
        lambda labels, logits: list_loss(logits, labels, listwise_weight, pointwise_columns),
        signature or [LIST_FEATURE_SIGNATURE, LABEL_SIGNATURE],
    )


def make_train_step(model: SequenceRanker, learning_rate: float, signature=None):
    """One compiled optimizer step for any batch shape (binary cross-entropy of each row), traced once."""
    loss_fn = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    return _compiled_step(model, learning_rate, loss_fn, signature or [FEATURE_SIGNATURE, LABEL_SIGNATURE])


def _compiled_step(model: SequenceRanker, learning_rate: float, loss_of, signature):
    """One optimizer step of loss_of(labels, logits) (a Keras loss's order), traced once: the variables exist before
    tracing (a tf.function that creates variables traces twice) and the signature is fixed (a distributed dataset's
    element_spec under MirroredStrategy). Each replica runs its share of the batch; its loss is divided by the replicas, so the
    all-reduced (summed) gradients are the whole batch's mean's (one replica: the loss itself). Returns the mean loss.

    The legacy Adam applies each variable's update as one fused op, which keeps the per-step overhead low
    for models with many small weights like these.
    """
    strategy = model.distribute_strategy
    create_variables(model)
    with strategy.scope():
        optimizer = tf.keras.optimizers.legacy.Adam(learning_rate)
        # What apply_gradients would do on its first call, done here so that the trace creates no variables.
        optimizer._create_all_weights(model.trainable_variables)
    replicas = strategy.num_replicas_in_sync

    def replica_step(features, labels):
        with tf.GradientTape() as tape:
            loss = loss_of(labels, model(features, training=True)) + tf.add_n([tf.zeros([])] + model.losses)
            share = loss / replicas
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(share, variables), variables))
        return loss

    @tf.function(input_signature=signature, autograph=False)
    def step(features, labels):
        losses = strategy.run(replica_step, args=(features, labels))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

    return step


def _run_steps(step, dataset, warmup: int, strategy) -> tuple[float, int, float]:
    """Runs `step` over a dataset; returns (seconds, examples) of the batches after the first `warmup`, and
    the mean batch loss (kept as tensors until the end, so the steps never wait for the host)."""
    batches, examples, start, losses = 0, 0, None, []
    for features, labels in dataset:
        if batches == warmup:
            start = time.perf_counter()
        losses.append(step(features, labels))
        batches += 1
        if batches > warmup:
            examples += sum(len(part) for part in strategy.experimental_local_results(labels))
    mean_loss = float(tf.reduce_mean(tf.stack(losses)).numpy())
    return time.perf_counter() - start, examples, mean_loss


def train(
    model: SequenceRanker,
    data: RankingData | StreamedRanking,
    config: TrainConfig,
    validation: RankingData | SplitChunks | None = None,
) -> dict:
    """Trains for `config.epochs` epochs on `data` (in memory, or streamed a bucket at a time); with `validation`, keeps
    the weights of the epoch with the best validation AUC (early stopping: on small data both DIN and DIEN overfit
    after a few epochs).

    Returns train_s (wall clock, tracing and validation included), train_examples_per_s (without the first
    WARMUP_BATCHES batches of each epoch), epochs_run, loss_by_epoch (mean training loss), and with validation
    best_epoch (1-based), valid_auc and valid_auc_by_epoch (the evidence for choosing `epochs` and `patience`).
    Logs one line per epoch with the time left at the pace so far.
    """
    if validation is not None and not _both_labels(_labels(validation)):
        validation = None  # AUC is undefined on it: train all epochs and keep the last
    tf.keras.utils.set_random_seed(config.seed)
    step, dataset = _step_and_batches(model, data, config)
    start, cpu_start = time.perf_counter(), time.process_time()
    timed_seconds, timed_examples = 0.0, 0
    best = {"valid_auc": -np.inf}
    by_epoch, losses = [], []
    warmup = min(WARMUP_BATCHES, -(-data.size // config.batch_size) // 2)
    name = type(model).__name__
    log.info("%s: training on %d rows, %d epochs of batch %d", name, data.size, config.epochs, config.batch_size)
    for epoch in range(1, config.epochs + 1):
        seconds, examples, loss = _run_steps(step, dataset, warmup, model.distribute_strategy)
        timed_seconds, timed_examples = timed_seconds + seconds, timed_examples + examples
        losses.append(loss)
        stop = False
        if validation is not None:
            probabilities, labels, _, _ = scored(model, validation, timed=False)
            by_epoch.append(metrics.auc(labels, probabilities))
            if by_epoch[-1] > best["valid_auc"]:
                best = {"valid_auc": by_epoch[-1], "best_epoch": epoch, "weights": model.get_weights()}
            elif config.patience is not None and epoch - best["best_epoch"] >= config.patience:
                stop = True
        elapsed = time.perf_counter() - start
        log.info(
            "%s epoch %d/%d  loss %.4f%s  %.0f s, %s",
            name,
            epoch,
            config.epochs,
            loss,
            f"  valid AUC {by_epoch[-1]:.4f}" if by_epoch else "",
            elapsed,
            progress.time_left(elapsed, config.epochs if stop else epoch, config.epochs),
        )
        if stop:
            break
    result = {
        "train_s": time.perf_counter() - start,
        "train_cpu_s": time.process_time() - cpu_start,  # process CPU (all threads): steadier on a shared machine
        "train_examples_per_s": timed_examples / timed_seconds,
        "epochs_run": epoch,
        "loss_by_epoch": losses,
    }
    if validation is None:
        return result
    model.set_weights(best.pop("weights"))
    return {**result, **best, "valid_auc_by_epoch": by_epoch}


def _step_and_batches(model: SequenceRanker, data: RankingData | StreamedRanking, config: TrainConfig):
    """The compiled train step for the rows (with their lists or without) and their epochs' batches (each iteration
    of the dataset is an epoch), in memory or streamed; under MirroredStrategy each batch split over the replicas."""
    streamed = isinstance(data, StreamedRanking)
    dataset = (
        data.dataset(config.batch_size, config.seed)
        if streamed
        else bucketed_dataset(data, config.batch_size, seed=config.seed)
    )
    signature = None
    strategy = model.distribute_strategy
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        dataset = strategy.experimental_distribute_dataset(dataset)
        signature = list(dataset.element_spec)
    if streamed or data.lists:
        step = make_list_step(model, config.learning_rate, config.listwise_weight, data.pointwise_columns, signature)
    else:
        step = make_train_step(model, config.learning_rate, signature)
    return step, dataset


def evaluation_split(features_dir: str | Path, split: str, config: TrainConfig) -> RankingData | SplitChunks:
    """The valid or test split in memory, or as SplitChunks where config.train_input streams ("auto": by the split's
    own rows, as the train split's): scoring a chunked split holds a float a row, not its histories."""
    count = reader.example_count(features_dir, schema.RANKING_DIR, split)
    if reader.train_input(config.train_input, count) == "stream":
        return SplitChunks(str(features_dir), split, config.stream_bucket_rows)
    return load_split(features_dir, split)


def _forward(model: SequenceRanker):
    return tf.function(
        lambda features: tf.sigmoid(model(features, training=False)),
        input_signature=[FEATURE_SIGNATURE],
        autograph=False,
    )


def predict(
    model: SequenceRanker, data: RankingData, batch_size: int = 1024, timed: bool = True, forward=None
) -> tuple[np.ndarray, float]:
    """P(label = 1) for every row in row order, and (`timed`) inference examples/s of a second pass over
    the same batches (the first pass traces). `forward`: the compiled model of an earlier call (a chunk's)."""
    forward = forward or _forward(model)
    dataset = bucketed_dataset(data, batch_size).cache()
    outputs = [forward(features).numpy() for features, _ in dataset]
    speed = float("nan")
    if timed:
        start = time.perf_counter()
        for features, _ in dataset:
            forward(features).numpy()
        speed = data.size / (time.perf_counter() - start)
    probabilities = np.empty(data.size, np.float32)
    probabilities[rows_in_order(data, batch_size)] = np.concatenate(outputs)
    return probabilities, speed


def scored(
    model: SequenceRanker, data: RankingData | SplitChunks, timed: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(P(label = 1), label, user index) of every row in row order, and (`timed`) predict's inference examples/s
    (of the first chunk for SplitChunks, whose chunks are scored one at a time by one compiled model)."""
    if isinstance(data, RankingData):
        probabilities, speed = predict(model, data, timed=timed)
        return probabilities, data.scalars[schema.LABEL], data.scalars[schema.USER], speed
    forward, parts, speed = _forward(model), [], float("nan")
    for chunk in data.chunks():
        probabilities, chunk_speed = predict(model, chunk, timed=timed and not parts, forward=forward)
        speed = chunk_speed if not parts else speed
        parts.append((probabilities, chunk.scalars[schema.LABEL], chunk.scalars[schema.USER]))
    probabilities, labels, users = (np.concatenate(column) for column in zip(*parts, strict=True))
    return probabilities, labels, users, speed


def _labels(data: RankingData | SplitChunks) -> np.ndarray:
    return data.scalars[schema.LABEL] if isinstance(data, RankingData) else data.labels()


def _both_labels(labels: np.ndarray) -> bool:
    return 0 < labels.sum() < len(labels)


def evaluate(model: SequenceRanker, data: RankingData | SplitChunks, with_scores: bool = False) -> dict:
    """auc, gauc (grouped by user), logloss and infer_examples_per_s on one split (in memory or chunked). AUC and
    GAUC are NaN where undefined (one label only; no user with both labels), as components.metrics does for GAUC.
    `with_scores` adds `test_scores`, `test_labels` and `test_users` (user indices), row by row in row order (the
    bench's intervals read them)."""
    probabilities, labels, users, speed = scored(model, data)
    auc = metrics.auc(labels, probabilities) if _both_labels(labels) else float("nan")
    result = {
        "auc": auc,
        "gauc": metrics.gauc(labels, probabilities, users),
        "logloss": metrics.logloss(labels, probabilities),
        "infer_examples_per_s": speed,
    }
    if not with_scores:
        return result
    return {**result, "test_scores": probabilities, "test_labels": labels, "test_users": users}


@dataclasses.dataclass(frozen=True)
class RefitSteps:
    """The valid split's real steps with their lists (the refit's new rows; streamed from user buckets beside a
    streamed train split), and the counts of the train and valid steps together (the refit model's context: an item
    first bought in the valid window is counted)."""

    data: RankingData | StreamedRanking
    statistics: ItemStatistics


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """The train rows that are real steps, each with its negative list (in memory, or streamed from user buckets on
    local disk), the counts of those steps, and the valid steps a refit trains on (None: no refit)."""

    data: RankingData | StreamedRanking
    statistics: ItemStatistics
    refit: RefitSteps | None = None

    def rows_in_memory(self) -> RankingData:
        """The whole split's rows, or a streamed split's first bucket (what a fixed set of batches is cut from)."""
        return self.data.bucket(0) if isinstance(self.data, StreamedRanking) else self.data


def own_steps(data: RankingData, ranking_task: str) -> np.ndarray:
    """bool [rows]: rows whose target is the user's real next step (next_item: the positives; cvr: every row,
    each a viewed step labelled bought or not)."""
    if ranking_task == "next_item":
        return data.scalars[schema.LABEL] == 1
    return np.ones(data.size, dtype=bool)


def training_set(
    features_dir: str,
    train_config: TrainConfig,
    retrieval_dir: str | None,
    retriever=None,
    valid: RankingData | None = None,
) -> TrainingSet:
    """The train split's real steps with their lists: hard negatives from the retriever's candidates when a
    retrieval model is given (hard_negatives.py), and popularity negatives drawn by the steps' target counts.
    `retriever` (anything with encode(hist, cats) and item_embeddings) stands for a model not exported to
    `retrieval_dir`: the lifecycle bench's in-memory models. The split is read whole, or streamed as
    train_config.train_input says ("auto": above reader.STREAM_ABOVE train rows; streamed_training_set). `valid`: the
    valid split when the caller has read it for selection already, so the refit's steps do not read it again."""
    spec = schema.FeatureSpec.read(features_dir)
    retriever = _negatives_retriever(train_config, retrieval_dir, retriever)
    if retriever is None and not train_config.popularity_negatives:
        raise ValueError("a train list needs at least one negative: hard_negatives or popularity_negatives >= 1")
    brand = item_brands(features_dir, spec.num_items)
    item_category = item_category_table(features_dir, spec.num_items)
    count = reader.example_count(features_dir, schema.RANKING_DIR, "train")
    if reader.train_input(train_config.train_input, count) == "stream":
        train_set = streamed_training_set(features_dir, train_config, retriever, brand, item_category)
    else:
        data = load_split(features_dir, "train")
        data = take_rows(data, np.flatnonzero(own_steps(data, spec.ranking_task)))
        statistics = step_statistics(features_dir, data, brand)
        hard = _hard_negatives(data, train_config, retriever, ())
        sampler = PopularitySampler(statistics.target_counts)
        train_set = TrainingSet(with_lists(data, hard, (), sampler, item_category, train_config), statistics)
    return with_refit_steps(train_set, features_dir, spec, train_config, retriever, brand, item_category, valid)


def with_refit_steps(
    train_set: TrainingSet,
    features_dir: str,
    spec: schema.FeatureSpec,
    config: TrainConfig,
    retriever,
    brand: np.ndarray,
    item_category: np.ndarray,
    valid: RankingData | SplitChunks | None = None,
) -> TrainingSet:
    """`train_set` with the valid split's real steps (those with a history) listed as the train rows are, for the refit
    through valid (config.refit_epochs; unchanged without one, or when valid has no such step): streamed from user
    buckets beside a streamed train split (streamed_refit_steps), else in memory. `valid`: the split if read already
    (in memory, or chunked: its steps are gathered a chunk at a time), else it is read here."""
    if not config.refit_epochs:
        return train_set
    if isinstance(train_set.data, StreamedRanking):
        return streamed_refit_steps(train_set, features_dir, config, retriever, brand, item_category)
    if valid is None:
        valid = load_split(features_dir, "valid")
    chunks = [valid] if isinstance(valid, RankingData) else valid.chunks()
    parts = [take_rows(chunk, np.flatnonzero(_refit_step(chunk, spec.ranking_task))) for chunk in chunks]
    steps = concatenate(parts)
    if not steps.size:
        return train_set
    statistics = train_set.statistics.merged(step_statistics(features_dir, steps, brand))
    hard = _hard_negatives(steps, config, retriever, REFIT_KEY)
    sampler = PopularitySampler(statistics.target_counts)
    listed_steps = with_lists(steps, hard, REFIT_KEY, sampler, item_category, config)
    return dataclasses.replace(train_set, refit=RefitSteps(listed_steps, statistics))


def _refit_step(data: RankingData, ranking_task: str) -> np.ndarray:
    """bool [rows]: valid rows the refit trains on: real steps with a history."""
    return own_steps(data, ranking_task) & (data.lengths > 0)


def streamed_training_set(
    features_dir: str, train_config: TrainConfig, retriever, brand: np.ndarray, item_category: np.ndarray
) -> TrainingSet:
    """The train split as StreamedRanking: partitioned by user once (reader.partition_by_user), then each bucket read
    alone, its real steps in canonical order (a function of the rows, not of Beam's shards), their counts added to
    the statistics and their hard negatives drawn with a generator of (seed, bucket). A user's steps are all in one
    bucket, so the negatives exclude the user's buys in the whole split, as in memory; the pool shrinks (a catalogue
    too small for it) by the bucket's rows. Memory holds one bucket; the folder goes with the returned set."""
    directory = tempfile.TemporaryDirectory(prefix="ranking-train-")
    count, buckets = _train_buckets(features_dir, train_config)
    log.info("ranking: streaming %d train rows from %d user buckets under %s", count, buckets, directory.name)
    streamed, statistics = _streamed_steps(
        features_dir, "train", own_steps, buckets, directory, train_config, retriever, brand, item_category, None, 0
    )
    if streamed is None:
        raise schema.SchemaError(f"{features_dir}: ranking/train has no real steps to train on")
    return TrainingSet(streamed, statistics)


def streamed_refit_steps(
    train_set: TrainingSet,
    features_dir: str,
    config: TrainConfig,
    retriever,
    brand: np.ndarray,
    item_category: np.ndarray,
) -> TrainingSet:
    """with_refit_steps beside a streamed train split: valid partitioned into as many user buckets as train (bucket b
    of both holds the same users: reader.user_bucket), each bucket's steps with a history saved with their hard
    negatives, drawn with the key REFIT_KEY[0] + b (apart from every train bucket's); their popularity negatives are
    drawn by the train and valid counts together, as in memory. Memory holds one bucket."""
    directory = tempfile.TemporaryDirectory(prefix="ranking-refit-")
    streamed, counted = _streamed_steps(
        features_dir,
        "valid",
        _refit_step,
        _train_buckets(features_dir, config)[1],
        directory,
        config,
        retriever,
        brand,
        item_category,
        train_set.statistics,
        REFIT_KEY[0],
    )
    if streamed is None:
        return train_set
    return dataclasses.replace(train_set, refit=RefitSteps(streamed, counted))


def _train_buckets(features_dir: str, config: TrainConfig) -> tuple[int, int]:
    """(train rows, user buckets): the streamed train split's partition, which its refit's valid steps share."""
    count = reader.example_count(features_dir, schema.RANKING_DIR, "train")
    return count, reader.bucket_count(count, config.stream_bucket_rows)


def _streamed_steps(
    features_dir: str,
    split: str,
    steps_of: Callable[[RankingData, str], np.ndarray],
    buckets: int,
    directory: tempfile.TemporaryDirectory,
    config: TrainConfig,
    retriever,
    brand: np.ndarray,
    item_category: np.ndarray,
    counted: ItemStatistics | None,
    key_base: int,
) -> tuple[StreamedRanking | None, ItemStatistics | None]:
    """(StreamedRanking of `split`'s real steps, the counts of its steps added to `counted`); (None, None) for no
    step. The split is partitioned by user into `buckets` files under `directory`, each read alone in canonical order,
    its steps (`steps_of`(rows, ranking task): train's every real step, the refit's those with a history) counted
    and saved with their hard negatives drawn with the key key_base + bucket; the popularity negatives are drawn
    when a bucket is read, by every step's counts."""
    spec = schema.FeatureSpec.read(features_dir)
    files = reader.partition_by_user(features_dir, schema.RANKING_DIR, split, directory.name, buckets)
    paths, keys, sizes, statistics = [], [], [], counted
    for bucket, file in enumerate(files):
        data = read_batches(reader.bucket_dataset(file, schema.RANKING_DIR, split, 8192), file)
        os.remove(file)
        if data is None:
            continue
        order = reader.canonical_order(data.scalars)
        steps = steps_of(data, spec.ranking_task)
        data = take_rows(data, order[steps[order]])
        if not data.size:
            continue
        steps_counted = step_statistics(features_dir, data, brand)
        statistics = steps_counted if statistics is None else statistics.merged(steps_counted)
        paths.append(str(Path(file).with_suffix(".npz")))
        write_bucket(paths[-1], data, _hard_negatives(data, config, retriever, (key_base + bucket,)))
        keys.append(key_base + bucket)
        sizes.append(data.size)
    if not paths:
        return None, None
    complete = functools.partial(
        with_lists,
        sampler=PopularitySampler(statistics.target_counts),
        item_category=item_category,
        config=config,
    )
    pointwise = pointwise_columns(config, retriever is not None)
    return StreamedRanking(tuple(paths), tuple(keys), tuple(sizes), pointwise, complete, directory), statistics


def _negatives_retriever(train_config: TrainConfig, retrieval_dir: str | None, retriever):
    """The retriever the hard negatives come from (`retriever`, or the model in `retrieval_dir`); None for none."""
    if not (train_config.hard_negatives or train_config.near_negatives):
        return None
    if retriever is None and retrieval_dir:
        from components.retrieval.model_io import load_retriever

        return load_retriever(retrieval_dir)
    return retriever


def step_statistics(features_dir: str, data: RankingData, brand: np.ndarray) -> ItemStatistics:
    """The counts of the rows' steps (previous item -> target); refuses a row with an empty history."""
    values, offsets = data.sequences[schema.HIST_ITEMS]
    if (np.diff(offsets) == 0).any():
        raise schema.SchemaError(f"{features_dir}: ranking/train has rows with an empty history")
    return ItemStatistics.from_steps(values[offsets[1:] - 1], data.scalars[schema.TARGET_ITEM], brand)


def _hard_negatives(data: RankingData, config: TrainConfig, retriever, key: tuple[int, ...]) -> np.ndarray | None:
    """The rows' negatives from the retriever's candidates (hard_negative_lists; `key`: a bucket's); None without one."""
    if retriever is None:
        return None
    return hard_negative_lists(
        data,
        retriever,
        config.hard_negatives,
        config.hard_negative_pool,
        config.seed,
        near=config.near_negatives,
        near_pool=config.near_pool,
        near_sampling=config.near_sampling,
        gaps=config.hard_negative_gaps,
        key=key,
    )


def with_lists(
    data: RankingData,
    hard: np.ndarray | None,
    key: tuple[int, ...],
    sampler: PopularitySampler,
    item_category: np.ndarray,
    config: TrainConfig,
) -> RankingData:
    """The rows with their lists: the hard negatives, then popularity negatives drawn with a generator of (seed, `key`)
    (a streamed bucket's key; () in memory)."""
    rng, targets = np.random.default_rng([config.seed, 11, *key]), data.scalars[schema.TARGET_ITEM]
    parts = [] if hard is None else [hard]
    parts += [sampler.sample_excluding(rng, targets)[:, None] for _ in range(config.popularity_negatives)]
    negatives = np.concatenate(parts, axis=1).astype(np.int64)
    lists = {NEGATIVE_ITEMS: negatives, NEGATIVE_CATS: item_category[negatives]}
    return dataclasses.replace(data, lists=lists, pointwise_columns=pointwise_columns(config, hard is not None))


def pointwise_columns(config: TrainConfig, with_hard: bool) -> tuple[bool, ...] | None:
    """The list entries the pointwise loss reads (None: all): without near_pointwise, the near negatives are left
    out of it (the list is target, near..., far..., popular...)."""
    near = config.near_negatives if with_hard else 0
    if not near or config.near_pointwise:
        return None
    far = (config.hard_negatives if with_hard else 0) + config.popularity_negatives
    return (True,) + (False,) * near + (True,) * far


def fit_fusion(features_dir: str, output_dir: str, retrieval_dir: str, selected: SequenceRanker | None = None) -> dict:
    """Chooses the funnel's retrieval weight on valid and stores it in ranker.json, with the models that have not
    trained on valid: the retriever before its refit (load_valid_retriever) and `selected`, the ranker before its
    refit (None: the exported ranker, which had none)."""
    from components.retrieval.model_io import load_valid_retriever

    ranker = load_ranker(output_dir) if selected is None else Ranker(ranker_module(selected, features_dir))
    fusion = choose_on_split(load_valid_retriever(retrieval_dir), ranker, features_dir, "valid")
    write_fusion(output_dir, fusion)
    return fusion


def artifact_info(
    spec: schema.FeatureSpec, train_config: TrainConfig, retrieval_dir: str | None, test_metrics: dict
) -> dict:
    """What ranker.json says of the run besides the model configuration."""
    return {
        "ranking_task": spec.ranking_task,
        "train_config": dataclasses.asdict(train_config),
        "context_features": list(CONTEXT_FEATURES),
        "hard_negatives_from": retrieval_dir,
        "test_metrics": test_metrics,
    }


@dataclasses.dataclass
class FittedRanker:
    """What fit_and_measure gives: the served model, its metrics, and the model selected on valid before its refit
    (None without a refit: `model` is the selected one), which choices made on valid must read."""

    model: SequenceRanker
    metrics: dict
    selected: SequenceRanker | None = None


def refit_rows(train_set: TrainingSet, replay: float, seed: int) -> RankingData | StreamedRanking:
    """The refit's rows: the valid steps, then round(replay * rows) of the train rows drawn without replacement by a
    generator of `seed` (bucket by bucket for a streamed split, so memory holds the drawn rows only; beside streamed
    valid steps, as buckets on disk: streamed_refit_rows)."""
    rng = np.random.default_rng([seed, REFIT_REPLAY_DRAW])
    data = train_set.data
    if isinstance(train_set.refit.data, StreamedRanking):
        return streamed_refit_rows(data, train_set.refit.data, replay, rng)
    buckets = (data.bucket(i) for i in range(len(data.paths))) if isinstance(data, StreamedRanking) else (data,)
    parts = [train_set.refit.data]
    for bucket in buckets:
        parts.append(take_rows(bucket, _replayed(bucket, replay, rng)))
    return concatenate(parts)


def _replayed(bucket: RankingData, replay: float, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(bucket.size, size=int(round(replay * bucket.size)), replace=False))


def streamed_refit_rows(
    train: StreamedRanking, valid: StreamedRanking, replay: float, rng: np.random.Generator
) -> StreamedRanking:
    """refit_rows of streamed valid steps: bucket b holds valid's steps of its users, then the replay draw of train's
    bucket b (train's buckets drawn in order, as refit_rows draws them beside valid steps in memory), each part listed
    by its own split's counts and saved with its lists. Memory holds one bucket; the folder goes with the result."""
    directory = tempfile.TemporaryDirectory(prefix="ranking-refit-rows-")
    valid_index = {key - REFIT_KEY[0]: index for index, key in enumerate(valid.buckets)}
    train_index = {key: index for index, key in enumerate(train.buckets)}
    paths, keys, sizes = [], [], []
    for bucket in sorted(valid_index.keys() | train_index.keys()):
        parts = [valid.bucket(valid_index[bucket])] if bucket in valid_index else []
        if bucket in train_index:
            rows = train.bucket(train_index[bucket])
            parts.append(take_rows(rows, _replayed(rows, replay, rng)))
        joined = concatenate(parts)
        if joined.size:
            paths.append(str(Path(directory.name, f"refit-{bucket:05d}.npz")))
            write_bucket(paths[-1], joined, None)
            keys.append(bucket)
            sizes.append(joined.size)
    complete = functools.partial(listed, pointwise=train.pointwise_columns)
    return StreamedRanking(tuple(paths), tuple(keys), tuple(sizes), train.pointwise_columns, complete, directory)


def refit_through_valid(
    selected: SequenceRanker,
    model_config: ModelConfig,
    train_config: TrainConfig,
    spec: schema.FeatureSpec,
    train_set: TrainingSet,
) -> tuple[SequenceRanker, dict]:
    """The served ranker: a model on the train + valid counts (train_set.refit.statistics), started from `selected`'s
    learned weights and trained train_config.refit_epochs epochs on refit_rows (the valid steps and a WARM_REPLAY of
    train), the last epoch kept (selection on valid is over: nothing is validated); with its refit_* figures."""
    from components.ranking import warm_start

    rows = refit_rows(train_set, warm_start.WARM_REPLAY, train_config.seed)
    model = build_model(model_config, spec.num_items, spec.num_categories, train_set.refit.statistics)
    create_variables(model)
    warm_start.copy_learned(selected, model)
    trained = train(model, rows, dataclasses.replace(train_config, epochs=train_config.refit_epochs))
    figures = {
        "refit_epochs_run": trained["epochs_run"],
        "refit_rows": rows.size,
        "refit_valid_rows": train_set.refit.data.size,
        "refit_s": trained["train_s"],
        "refit_cpu_s": trained["train_cpu_s"],
    }
    log.info("ranking refit through valid: %s", figures)
    return model, figures


def fit_and_measure(
    model_config: ModelConfig,
    train_config: TrainConfig,
    spec: schema.FeatureSpec,
    train_set: TrainingSet,
    valid: RankingData,
    test: RankingData,
    warm: tuple | None = None,
    with_scores: bool = False,
) -> FittedRanker:
    """A `model_config` model trained on `train_set` (the best epoch on `valid`), refit through valid when the set
    holds its valid steps (train_config.refit_epochs), and measured on test. The ranking stage and the bench's
    ranking_bench both train through here, so the bench measures the stage's model. `warm` =
    (ranking.warm_start.Parent, today's features folder) seeds the model from the parent before training, items by id;
    the metrics then hold `warm_start` (what was carried), and with `with_scores` `test_scores` (the test
    probabilities in row order, from the same pass as the metrics). train_s and train_cpu_s include the refit's."""
    tf.keras.utils.set_random_seed(train_config.seed)
    model = build_model(model_config, spec.num_items, spec.num_categories, train_set.statistics)
    carried = {}
    if warm is not None:
        from components.ranking import warm_start

        parent, features_dir = warm
        create_variables(model)
        carried = {"warm_start": warm_start.initialise(model, features_dir, parent)}
        log.info("ranking: warm start from %s: %s", parent.version, carried["warm_start"])
    trained = train(model, train_set.data, train_config, valid)
    selected, refit = None, {}
    if train_config.refit_epochs and train_set.refit is not None:
        selected = model
        model, refit = refit_through_valid(selected, model_config, train_config, spec, train_set)
        trained["train_s"] += refit["refit_s"]
        trained["train_cpu_s"] += refit["refit_cpu_s"]
    return FittedRanker(model, {**trained, **refit, **evaluate(model, test, with_scores), **carried}, selected)


def write_artifact(
    model: SequenceRanker,
    features_dir: str,
    output_dir: str,
    spec: schema.FeatureSpec,
    train_config: TrainConfig,
    retrieval_dir: str | None,
    result: dict,
    warm_start: dict | None = None,
    train_keys=None,
    selected: SequenceRanker | None = None,
) -> dict:
    """Exports the ranking artifact to `output_dir` (ranker.json records `result`, and `warm_start`: what a warm start
    carried from its parent; WEIGHTS `train_keys`, warm_start.row_keys of the rows trained on); with `retrieval_dir`,
    chooses the funnel's fusion weight on valid (with `selected`, the model before its refit: fit_fusion) and adds it to
    `result` as retrieval_weight. Returns `result`."""
    info = artifact_info(spec, train_config, retrieval_dir, result)
    if warm_start is not None:
        info["warm_start"] = warm_start
    export_ranker(model, features_dir, output_dir, info, train_keys)
    if retrieval_dir:
        result["retrieval_weight"] = fit_fusion(features_dir, output_dir, retrieval_dir, selected)["retrieval_weight"]
    return result
