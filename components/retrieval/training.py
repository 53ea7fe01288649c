"""Training: epochs over the train prefixes (or every step of each user's train sequence), model
selection on valid (full-catalogue NDCG@20)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from components import distribution, schema
from components.features import reader
from components.retrieval import evaluation
from components.retrieval.config import RetrievalConfig
from components.retrieval.data import (
    Catalogue,
    Examples,
    Sequences,
    StreamedExamples,
    concatenate_examples,
    load_catalogue,
    load_examples,
    sample_users_of,
    stream_examples,
    train_sequences,
    valid_selection,
)
from components.retrieval.model import TwoTowerModel

log = logging.getLogger(__name__)

SELECTION_METRIC = "ndcg@20"
SORT_WINDOW_BATCHES = 32  # batches per window sorted by history length (see `batch_order`)
ENCODE_BATCH = 1024


@dataclasses.dataclass
class TrainingResult:
    model: TwoTowerModel
    catalogue: Catalogue
    config: RetrievalConfig
    valid_metrics: dict[str, float]  # of the selected epoch
    best_epoch: int
    epochs_run: int
    train_examples: int  # targets per epoch (with every_position, the steps that have one)
    train_s: float  # wall time of the whole training: start-up, epochs and their validation
    fit_s: float  # time inside gradient steps only
    train_cpu_s: float = 0.0  # process CPU time (all threads) over train_s's span: steadier on a shared machine
    # of train_s / train_cpu_s, the fixed start-up before the first epoch: model build, warm-start initialisation,
    # tracing the train step and the query encoder (the first epoch still pays the graphs' first execution)
    startup_s: float = 0.0
    startup_cpu_s: float = 0.0
    history: list[dict] = dataclasses.field(default_factory=list)  # per epoch: loss, valid hit@20 / ndcg@20, seconds
    warm_start: dict | None = None  # what a warm start carried from its parent (warm_start.initialise)
    train_keys: np.ndarray | None = None  # example_keys of the examples trained on, for tomorrow's warm start
    refit: dict | None = None  # the refit through valid (refit_through_valid): epochs, rows, seconds; None: none
    # after a refit, the selected model and its catalogue: they have never trained on a valid target, so choices made
    # on valid downstream (the funnel's fusion weight) are made with them (export's SELECTED folder)
    selected: tuple[TwoTowerModel, Catalogue] | None = None

    @property
    def train_examples_per_s(self) -> float:
        """Training speed: examples per second of fitting over every epoch run."""
        return self.train_examples * self.epochs_run / max(self.fit_s, 1e-9)


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled epoch in which each batch holds histories of similar length.

    Windows of SORT_WINDOW_BATCHES random batches are sorted by length, cut into batches, and the
    batches shuffled: the query tower then trims most batches to a few steps instead of max_len
    (median Beauty history is 4), while the in-batch negatives stay a random draw of targets.
    The remainder that does not fill a batch is dropped, so every softmax has batch_size candidates.
    """
    order = rng.permutation(len(lengths))
    window = batch_size * SORT_WINDOW_BATCHES
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        order[start : start + window] = chunk[np.argsort(lengths[chunk], kind="stable")]
    num_batches = len(order) // batch_size
    if num_batches == 0:
        raise ValueError(f"{len(lengths)} train examples do not fill one batch of {batch_size}")
    batches = order[: num_batches * batch_size].reshape(num_batches, batch_size)
    return batches[rng.permutation(num_batches)].reshape(-1)


def learning_rate(config: RetrievalConfig, total_steps: int):
    """The optimizer's learning rate: config.learning_rate, or (lr_schedule "cosine") a schedule of the gradient step
    that falls from it to 0 along a half cosine over `total_steps` (the epochs cap's steps) and stays at 0 after."""
    if config.lr_schedule == "constant":
        return config.learning_rate
    return tf.keras.optimizers.schedules.CosineDecay(config.learning_rate, max(total_steps, 1), alpha=0.0)


def example_keys(
    features_dir: str | Path, examples: Examples, catalogue: Catalogue, users: np.ndarray | None = None
) -> np.ndarray:
    """uint64 [n]: a key of each example's event that another run's features give the same example (its user's id,
    its target item's id and the seconds from the step before it), whatever the two runs' vocabularies. `users`: the
    user vocabulary as an object array, when the caller has read it already."""
    if users is None:
        users = np.asarray(schema.read_vocab(features_dir, schema.USER_VOCAB), dtype=object)
    frame = pd.DataFrame(
        {
            "user": users[examples.user - schema.NUM_RESERVED],
            "item": catalogue.item_ids[examples.target_item],
            "gap": examples.gaps()[1],
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)


def replay_split(parent, keys: np.ndarray | None, config: RetrievalConfig) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows the parent did not train on, rows it did) of a warm start that trains on the new examples plus a replay
    share of the seen ones (config.warm_replay < 1), or None when every example trains each epoch (a cold run, a
    parent without recorded keys, no keys, every_position)."""
    seen = None if parent is None else parent.train_keys
    if seen is None or keys is None or config.warm_replay >= 1 or config.every_position:
        return None
    known = np.isin(keys, seen)
    return np.flatnonzero(~known), np.flatnonzero(known)


def _epoch_rows(split, total: int, replay: float, rng: np.random.Generator) -> np.ndarray:
    """The rows of one epoch: every row, or the new ones plus a fresh `replay` share of the seen ones."""
    if split is None:
        return np.arange(total)
    new, seen = split
    drawn = rng.choice(seen, size=int(round(replay * len(seen))), replace=False)
    return np.sort(np.concatenate([new, drawn]))


def _epoch_dataset(
    train: Examples | Sequences, order: np.ndarray, batch_size: int, gaps: bool = False
) -> tf.data.Dataset:
    tensors = {
        schema.HIST_ITEMS: train.hist_items[order],
        schema.HIST_CATS: train.hist_cats[order],
        schema.TARGET_ITEM: train.target_item[order],
    }
    if gaps:
        hist_gaps, target_gap = train.gaps()
        tensors[schema.HIST_GAPS], tensors[schema.TARGET_GAP] = hist_gaps[order], target_gap[order]
    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size, drop_remainder=True).prefetch(2)


def encode_queries(
    model: TwoTowerModel, hist_items: np.ndarray, hist_cats: np.ndarray, gaps: tuple | None = None
) -> np.ndarray:
    """Query embeddings in row order; rows are encoded shortest history first, so most chunks are
    trimmed to a few steps instead of the longest history of the split. `gaps`: (hist_gaps, request_gap)
    of a model with config.time_gaps (None: unknown)."""
    order = np.argsort((hist_items != schema.PAD_INDEX).sum(axis=1), kind="stable")
    out = np.empty((len(order), model.config.embedding_dim), dtype=np.float32)
    for start in range(0, len(order), ENCODE_BATCH):
        rows = order[start : start + ENCODE_BATCH]
        inputs = [tf.constant(hist_items[rows]), tf.constant(hist_cats[rows])]
        if gaps is not None and model.config.time_gaps:
            out[rows] = model.encode_with_gaps(*inputs, tf.constant(gaps[0][rows]), tf.constant(gaps[1][rows])).numpy()
        else:
            out[rows] = model.encode(*inputs).numpy()
    return out


def evaluate(model: TwoTowerModel, examples: Examples) -> dict[str, float]:
    """Full-catalogue metrics of `model` on a valid or test split."""
    queries = encode_queries(model, examples.hist_items, examples.hist_cats, examples.gaps())
    return evaluation.ranking_report(queries, model.item_embeddings(), examples.target_item, examples.seen_items)


@dataclasses.dataclass
class _BestEpoch:
    """The best validated epoch so far (SELECTION_METRIC on valid): its number, figures and weights."""

    score: float = -1.0
    epoch: int = 0
    metrics: dict = dataclasses.field(default_factory=dict)
    weights: list | None = None

    def offer(self, epoch: int, metrics: dict, model: tf.keras.Model) -> bool:
        """Keeps `epoch` (and a copy of the model's weights) when it beats the best so far; whether it did."""
        if metrics[SELECTION_METRIC] <= self.score:
            return False
        self.score, self.epoch, self.metrics, self.weights = (
            metrics[SELECTION_METRIC],
            epoch,
            metrics,
            model.get_weights(),
        )
        return True


def train(
    train_set: Examples | StreamedExamples,
    valid_set: Examples | None,
    catalogue: Catalogue,
    config: RetrievalConfig,
    parent=None,
    keys: np.ndarray | None = None,
    select_on_valid: bool = True,
) -> TrainingResult:
    """Trains up to config.epochs, keeps the weights of the best valid epoch, stops after `patience` worse ones
    (without `select_on_valid`, trains every epoch and keeps the last: valid is then in the training data).
    `parent` (warm_start.Parent) seeds the model from the last blessed one, items by id; with `keys`
    (example_keys of train_set) and a parent that recorded its own, each epoch trains on the examples the parent did
    not see plus config.warm_replay of the ones it did. A StreamedExamples train set (train_from_features with
    config.train_input "stream") trains a bucket at a time, each bucket's examples carrying their own keys."""
    from components.retrieval import warm_start

    if select_on_valid and valid_set is None:
        raise ValueError("selecting an epoch on valid needs the valid examples")
    started, cpu_started = time.perf_counter(), time.process_time()
    tf.keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    carried = None
    strategy = distribution.strategy()  # one strategy: the optimizer's slots must live in the model's
    with strategy.scope():  # MirroredStrategy on a multi-GPU machine: variables made here are mirrored
        id_known = None if parent is None else (catalogue.train_count > 0) | parent.known(catalogue)
        model = TwoTowerModel(catalogue, config, id_known=id_known)
        warm_start.build(model)
        if parent is not None:
            carried = warm_start.initialise(model, catalogue, config, parent)
            log.info("retrieval: warm start from %s: %s", parent.version, carried)
    epochs: _MemoryEpochs | _StreamedEpochs = (
        _StreamedEpochs(train_set, parent, config)
        if isinstance(train_set, StreamedExamples)
        else _MemoryEpochs(train_set, catalogue, parent, keys, config, rng)
    )
    if carried is not None and epochs.seen is not None:
        carried.update(new_examples=epochs.new, seen_examples=epochs.seen, replay=config.warm_replay)
    batch_size, batches = epochs.batch_size, epochs.batches
    with strategy.scope():
        # every variable (the model's and Adam's slots) exists before fit traces its step: a tf.function that creates
        # variables on its first call traces twice (it did: ~1.5 CPU s of each run on the lifecycle shop)
        rate = learning_rate(config, batches * config.epochs)
        optimizer = (
            tf.keras.optimizers.AdamW(rate, weight_decay=config.weight_decay)
            if config.weight_decay
            else tf.keras.optimizers.Adam(rate)
        )
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer)
    targets_per_epoch = epochs.targets_per_epoch
    best = _BestEpoch()
    # the train step and the query encoder traced here, before the first epoch: the start-up (model build, warm
    # start, graph tracing) is then measured apart from the epochs; fit and validation reuse both graphs. Without
    # select_on_valid (the refit: valid is in its training data) no epoch is validated, so no encoder is traced
    gaps = config.time_gaps
    model.make_train_function().get_concrete_function(
        iter(_epoch_dataset(epochs.first_rows(), np.arange(batch_size), batch_size, gaps))
    )
    if select_on_valid:
        (model.encode_with_gaps if gaps else model.encode).get_concrete_function()
    startup_s, startup_cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    fit_s, epochs_run, history = 0.0, 0, []
    for epoch in range(1, config.epochs + 1):
        dataset = epochs.dataset(epoch, gaps)
        fit_started = time.perf_counter()
        history_of_fit = model.fit(dataset, epochs=1, verbose=0)
        epoch_fit_s = time.perf_counter() - fit_started
        fit_s += epoch_fit_s
        epochs_run = epoch
        loss = float(history_of_fit.history["mean_loss"][-1])
        if not select_on_valid:  # every epoch trained, the last kept: nothing to validate
            history.append({"epoch": epoch, "loss": loss, "seconds": epoch_fit_s})
            log.info("epoch %d/%d  loss %.4f  %.1fs", epoch, config.epochs, loss, epoch_fit_s)
            continue
        valid = evaluate(model, valid_set)
        history.append(
            {
                "epoch": epoch,
                "loss": loss,
                "hit@20": valid["hit@20"],
                "ndcg@20": valid["ndcg@20"],
                "seconds": epoch_fit_s,
            }
        )
        improved = best.offer(epoch, valid, model)
        log.info(
            "epoch %d/%d  loss %.4f  valid hit@20 %.4f ndcg@20 %.4f  %.1fs%s",
            epoch,
            config.epochs,
            loss,
            valid["hit@20"],
            valid["ndcg@20"],
            epoch_fit_s,
            "  *best" if improved else "",
        )
        if epoch - best.epoch >= config.patience:
            break
    if select_on_valid:
        model.set_weights(best.weights)
    result = TrainingResult(
        model=model,
        catalogue=catalogue,
        config=config,
        valid_metrics=best.metrics,
        best_epoch=best.epoch if select_on_valid else epochs_run,
        epochs_run=epochs_run,
        train_examples=targets_per_epoch,
        train_s=time.perf_counter() - started,
        fit_s=fit_s,
        train_cpu_s=time.process_time() - cpu_started,
        startup_s=startup_s,
        startup_cpu_s=startup_cpu_s,
        history=history,
        warm_start=carried,
        train_keys=epochs.train_keys,
    )
    log.info(
        "retrieval trained: %s encoder, %s loss%s, %d epochs (best %d), %d targets per epoch, %.0f s "
        "(%.0f examples/s); valid hit@20 %.4f ndcg@20 %.4f mrr %.4f",
        config.encoder,
        config.loss,
        " at every position" if config.every_position else "",
        epochs_run,
        result.best_epoch,
        targets_per_epoch,
        result.train_s,
        result.train_examples_per_s,
        result.valid_metrics.get("hit@20", float("nan")),  # nan: not validated (the refit)
        result.valid_metrics.get("ndcg@20", float("nan")),
        result.valid_metrics.get("mrr", float("nan")),
    )
    return result


class _MemoryEpochs:
    """The epochs of a train split in memory: each a shuffled, length-sorted order of its rows (batch_order) drawn from
    the run's one generator, epoch after epoch (the order every run took before the stream existed)."""

    def __init__(self, train_set: Examples, catalogue: Catalogue, parent, keys, config: RetrievalConfig, rng):
        self.rows = train_sequences(train_set, catalogue.item_category) if config.every_position else train_set
        self.lengths = (self.rows.hist_items != schema.PAD_INDEX).sum(axis=1)
        self.split = replay_split(parent, keys, config)
        self.new: int | None = None if self.split is None else len(self.split[0])
        self.seen: int | None = None if self.split is None else len(self.split[1])
        self.replay, self.rng, self.train_keys = config.warm_replay, rng, keys
        size = (
            len(self.rows) if self.split is None else len(self.split[0]) + int(round(self.replay * len(self.split[1])))
        )
        # a shop smaller than one batch still trains (with fewer in-batch negatives)
        self.batch_size = min(config.batch_size, size)
        self.batches = size // self.batch_size
        self.targets_per_epoch = (
            int((self.rows.target_item[: self.batches * self.batch_size] != schema.PAD_INDEX).sum())
            if config.every_position
            else self.batches * self.batch_size
        )

    def first_rows(self) -> Examples | Sequences:
        return self.rows

    def dataset(self, epoch: int, gaps: bool) -> tf.data.Dataset:
        rows = _epoch_rows(self.split, len(self.rows), self.replay, self.rng)
        order = rows[batch_order(self.lengths[rows], self.batch_size, self.rng)]
        return _epoch_dataset(self.rows, order, self.batch_size, gaps)


class _StreamedEpochs:
    """The epochs of StreamedExamples: the buckets in an order drawn from (seed, epoch), each bucket's epoch (its rows,
    or its new rows plus a replay share of the seen ones) ordered by batch_order with a generator of (seed, epoch,
    bucket), batches handed to fit from a Python generator so that one bucket is in memory at a time (the next is read
    while the last batches of one are still queued). A bucket's remainder that does not fill a batch is left out
    of that epoch (a different remainder each epoch)."""

    def __init__(self, train_set: StreamedExamples, parent, config: RetrievalConfig):
        self.streamed, self.parent, self.config = train_set, parent, config
        keys = [train_set.keys(index) for index in range(len(train_set.paths))]
        self.train_keys = np.concatenate(keys)
        splits = [replay_split(parent, bucket_keys, config) for bucket_keys in keys]
        sizes = [
            size if split is None else len(split[0]) + int(round(config.warm_replay * len(split[1])))
            for size, split in zip(train_set.sizes, splits, strict=True)
        ]
        self.new: int | None = None
        self.seen: int | None = None
        if splits[0] is not None:  # replay_split depends on the parent and config alone: every bucket or none
            self.new = sum(len(split[0]) for split in splits if split is not None)
            self.seen = sum(len(split[1]) for split in splits if split is not None)
        self.batch_size = min(config.batch_size, max(sizes))
        self.batches = sum(size // self.batch_size for size in sizes)
        if config.every_position:  # the real targets of the rows an epoch's batches hold, as the memory path counts
            self.targets_per_epoch = 0
            for index, size in enumerate(sizes):
                rows, _ = train_set.bucket(index)
                used = size // self.batch_size * self.batch_size
                self.targets_per_epoch += int((rows.target_item[:used] != schema.PAD_INDEX).sum())
        else:
            self.targets_per_epoch = self.batches * self.batch_size

    def first_rows(self) -> Examples | Sequences:
        """The largest bucket's rows (the trace's batch needs batch_size of them); notes each column's row shape."""
        rows = self.streamed.bucket(int(np.argmax(self.streamed.sizes)))[0]
        hist_gaps, target_gap = rows.gaps()
        self.shapes = {
            schema.HIST_ITEMS: rows.hist_items.shape[1:],
            schema.HIST_CATS: rows.hist_cats.shape[1:],
            schema.TARGET_ITEM: rows.target_item.shape[1:],
            schema.HIST_GAPS: hist_gaps.shape[1:],
            schema.TARGET_GAP: target_gap.shape[1:],
        }
        return rows

    def dataset(self, epoch: int, gaps: bool) -> tf.data.Dataset:
        seed, batch_size, config = self.config.seed, self.batch_size, self.config
        names = [schema.HIST_ITEMS, schema.HIST_CATS, schema.TARGET_ITEM]
        if gaps:
            names += [schema.HIST_GAPS, schema.TARGET_GAP]

        def batches():
            for index in np.random.default_rng([seed, epoch]).permutation(len(self.streamed.paths)).tolist():
                rows, keys = self.streamed.bucket(index)
                rng = np.random.default_rng([seed, epoch, index])
                split = replay_split(self.parent, keys, config)
                chosen = _epoch_rows(split, len(rows), config.warm_replay, rng)
                if len(chosen) < batch_size:
                    continue
                lengths = (rows.hist_items[chosen] != schema.PAD_INDEX).sum(axis=1)
                order = chosen[batch_order(lengths, batch_size, rng)]
                hist_gaps, target_gap = rows.gaps()
                columns = {
                    schema.HIST_ITEMS: rows.hist_items,
                    schema.HIST_CATS: rows.hist_cats,
                    schema.TARGET_ITEM: rows.target_item,
                    schema.HIST_GAPS: hist_gaps,
                    schema.TARGET_GAP: target_gap,
                }
                for start in range(0, len(order), batch_size):
                    batch = order[start : start + batch_size]
                    yield {name: columns[name][batch] for name in names}

        signature = {name: tf.TensorSpec((batch_size, *self.shapes[name]), tf.int64) for name in names}
        return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


def train_from_features(features_dir: str | Path, config: RetrievalConfig, parent=None) -> TrainingResult:
    """Reads the features output (train and valid only; test is never read here) and trains. The train split is held
    in memory or streamed from user buckets on local disk (StreamedExamples, under a temporary folder) as
    config.train_input says ("auto": reader.STREAM_ABOVE). Selection's valid examples (config.valid_max_users of them,
    full-catalogue validation scoring each user's query at once) are in memory; streamed, only they are, read alone
    (data.valid_selection). With config.refit_epochs, the selected model is then refit through valid
    (refit_through_valid; streamed: train and valid partitioned again into the same user buckets, each bucket with its
    users' train rows, then their valid rows)."""
    catalogue = load_catalogue(features_dir)
    user_ids = schema.indexed_vocab(features_dir, schema.USER_VOCAB)
    count = reader.example_count(features_dir, schema.RETRIEVAL_DIR, "train")
    if reader.train_input(config.train_input, count) == "memory":
        valid_set = load_examples(features_dir, "valid", config.max_len)
        selection = sample_users_of(valid_set, user_ids, config.valid_max_users)  # the refit trains on all of valid
        _log_selection(len(selection), len(valid_set))
        train_set = load_examples(features_dir, "train", config.max_len)
        keys = example_keys(features_dir, train_set, catalogue)
        selected = train(train_set, selection, catalogue, config, parent, keys)
        if not config.refit_epochs:
            return selected
        valid_keys = example_keys(features_dir, valid_set, catalogue)
        return refit_through_valid(selected, train_set, valid_set.target_item, valid_set, valid_keys)
    # streamed: valid is never held whole either; selection reads its sampled users' rows, the refit its buckets
    selection, valid_targets = valid_selection(features_dir, user_ids, config.valid_max_users, config.max_len)
    _log_selection(len(selection), len(valid_targets))
    users = np.asarray(schema.read_vocab(features_dir, schema.USER_VOCAB), dtype=object)

    def streamed(directory: Path, with_valid: bool = False) -> StreamedExamples:
        return stream_examples(
            features_dir,
            config.max_len,
            directory,
            lambda examples: example_keys(features_dir, examples, catalogue, users),
            config.stream_bucket_rows,
            catalogue.item_category if config.every_position else None,
            with_valid,
        )

    with tempfile.TemporaryDirectory(prefix="retrieval-train-") as directory:
        log.info("retrieval: streaming %d train examples from user buckets under %s", count, directory)
        selected = train(streamed(Path(directory, "train")), selection, catalogue, config, parent)
        shutil.rmtree(Path(directory, "train"))
        if not config.refit_epochs:
            return selected
        del selection
        # the refit's buckets: each holds its users' train rows and then their valid rows, keyed
        return refit_through_valid(selected, streamed(Path(directory, "refit"), True), valid_targets)


def _log_selection(scored: int, examples: int) -> None:
    if scored < examples:
        log.info("retrieval: selection scores %d of %d valid examples (valid_max_users)", scored, examples)


def refit_through_valid(
    selected: TrainingResult,
    train_set: Examples | StreamedExamples,
    valid_targets: np.ndarray,
    valid_set: Examples | None = None,
    valid_keys: np.ndarray | None = None,
) -> TrainingResult:
    """The selected model warm-started on train + valid for config.refit_epochs epochs, the valid examples as the
    new rows (plus warm_replay of train each epoch), the last epoch kept. Selection on valid is over by then, so
    the valid figures, best epoch and curve stay the selection run's; the model, its catalogue (`valid_targets`
    counted: an item first bought in the valid window is known now) and the keys are the refit's. `train_set`: the
    train Examples (`valid_set`'s, keyed by `valid_keys`, are appended) or StreamedExamples whose buckets hold train
    and valid rows with their keys already (train_from_features' stream: valid_set None)."""
    from components.retrieval import warm_start
    from components.warm_start import load_arrays

    config = selected.config
    with tempfile.TemporaryDirectory(prefix="retrieval-refit-") as scratch:
        warm_start.save(selected.model, selected.catalogue, scratch, selected.train_keys)
        parent = warm_start.Parent("selected", load_arrays(scratch), dataclasses.asdict(config))
    counts = np.bincount(valid_targets, minlength=selected.catalogue.num_items)
    catalogue = dataclasses.replace(selected.catalogue, train_count=selected.catalogue.train_count + counts)
    both: Examples | StreamedExamples = train_set
    keys = None
    if isinstance(train_set, Examples):
        if valid_set is None:
            raise ValueError("a refit of train Examples needs the valid Examples to append")
        both = concatenate_examples(train_set, valid_set)
        if selected.train_keys is not None and valid_keys is not None:
            keys = np.concatenate([selected.train_keys, valid_keys])
    again = train(both, None, catalogue, dataclasses.replace(config, epochs=config.refit_epochs), parent, keys, False)
    refit = {
        "epochs": again.epochs_run,
        "valid_rows": len(valid_targets),
        "replay": config.warm_replay,
        "train_s": again.train_s,
        "train_cpu_s": again.train_cpu_s,
    }
    log.info("retrieval refit through valid: %s", refit)
    return dataclasses.replace(
        selected,
        model=again.model,
        catalogue=catalogue,
        train_s=selected.train_s + again.train_s,
        fit_s=selected.fit_s + again.fit_s,
        train_cpu_s=selected.train_cpu_s + again.train_cpu_s,
        train_keys=again.train_keys,
        refit=refit,
        selected=(selected.model, selected.catalogue),
    )
