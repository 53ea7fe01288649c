"""Offline evaluation of the campaign outputs on what happens after a cut time (components.export.complementary
and components.export.audiences).

- Complementary items, on held-out baskets: co-occurrence is counted on the baskets before the cut; every basket
  after it with at least two items gives one query per item, a hit when one of the basket's other items is in the
  item's top 10. HIT@10 of the shrunk lift with its fallback against plain counts, raw lift, similar items (cosine
  of the candidate embeddings) and the retrieval model's next items alone.
- Audiences, on the time split's test window: the models were trained before the cut, histories end where the
  window starts, and a target's future buyers are the users who buy it (an item of the category) in the window.
  precision@K and recall@K at K = 1% and 10% of the scored users, for the ranker's buy-or-not score and the
  funnel's fused score, against users who bought in the category before (most purchases first, then activity)
  and the most active users.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from components import schema
from components.export import audiences, complementary, similar
from components.features.sequences import event_flag
from components.serving import funnel

HIT_K = 10
AUDIENCE_SHARES = {"1%": 0.01, "10%": 0.10}
_DAY = dt.timedelta(days=1)


_connect = complementary.connect


def quantile_cut(events_path: str | Path, quantile: float = 0.8) -> dt.datetime:
    """The UTC midnight at or before the `quantile` of the event times: a cut that leaves data after it even
    where a shop's tail is thin (the synthetic shop's last weeks hold a few users)."""
    with _connect() as con:
        (when,) = con.execute(
            "SELECT to_timestamp(quantile_cont(epoch(event_ts), ?)) FROM read_parquet(?)", [quantile, str(events_path)]
        ).fetchone()
    return dt.datetime.combine(when.astimezone(dt.UTC).date(), dt.time(), tzinfo=dt.UTC)


def fitted_window_days(events_path: str | Path, cut: dt.datetime, window_days: float) -> float:
    """`window_days`, or less when the data after `cut` holds fewer than two such windows (valid, then test): the
    whole days of half what is left, else half of it (Taobao's sample ends two days after its 80% cut)."""
    with _connect() as con:
        (last,) = con.execute("SELECT max(event_ts) FROM read_parquet(?)", [str(events_path)]).fetchone()
    left_days = (last.astimezone(dt.UTC) - cut).total_seconds() / 86_400
    if left_days >= 2 * window_days:
        return window_days
    half = left_days / 2
    return float(int(half)) if half >= 1 else half


# ---- complementary items ----------------------------------------------------------------------------------
def heldout_baskets(events_path, params: complementary.CooccurrenceParams, start: dt.datetime) -> list[list[str]]:
    """The held-out baskets (two items or more) from `start` on, each a sorted item list: the campaign test set."""
    with _connect() as con:
        complementary.load_baskets(con, events_path, params, start=start, table="heldout")
        rows = con.execute(
            "SELECT list(item_id ORDER BY item_id) FROM heldout GROUP BY basket HAVING count(*) >= 2 ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


def hit_rate(lists: np.ndarray, item_ids: np.ndarray, baskets: list[list[str]], k: int = HIT_K) -> float:
    """Share of (basket, item) queries whose item's top k (rows of `lists`, model indices) holds another item
    of the basket; an item the model does not know is a miss."""
    lookup = {item: i for i, item in enumerate(item_ids) if i >= schema.NUM_RESERVED}
    hits = queries = 0
    for basket in baskets:
        indices = [lookup.get(item, -1) for item in basket]
        for position, row in enumerate(indices):
            queries += 1
            if row < 0:
                continue
            others = {i for j, i in enumerate(indices) if j != position and i >= 0}
            hits += bool(others & set(lists[row, :k].tolist()))
    return hits / max(queries, 1)


def evaluate_complementary(
    events_path: str | Path,
    cut: dt.datetime,
    retriever,
    item_category: np.ndarray,
    item_ids: np.ndarray,
    available: np.ndarray,
    params: complementary.CooccurrenceParams | None = None,
    min_support: int = 2,
) -> dict:
    """{"<method>": {"hit@10": ...}} on the baskets from `cut` on, co-occurrence from before it."""
    params = params or complementary.CooccurrenceParams()
    k = max(HIT_K, params.k)
    allowed = funnel.allowed_items(len(item_ids), available)
    candidates = [item for item, ok in zip(item_ids, allowed) if ok]
    baskets = heldout_baskets(events_path, params, cut)
    result = {"queries": sum(len(b) for b in baskets), "baskets": len(baskets)}
    if not baskets:
        return result

    def fallback(rows):
        return complementary.next_item_neighbours(retriever, item_category, rows, allowed, k)

    lists = {}
    for method in complementary.METHODS:
        pairs = complementary.cooccurrence(
            events_path,
            candidates,
            complementary.CooccurrenceParams(**{**_fields(params), "method": method, "k": k}),
            end=cut,
        )
        lists[method] = complementary.complementary_lists(pairs, item_ids, k, min_support=1).items
        if method == params.method:
            merged = complementary.complementary_lists(pairs, item_ids, k, min_support=min_support, fallback=fallback)
            lists["complementary"] = merged.items
    lists["similar_items"] = similar.similar_items(retriever.item_embeddings, available, k)[0]
    lists["next_item_embedding"] = fallback(np.arange(len(item_ids)))[0]
    for name, matrix in lists.items():
        result[name] = {f"hit@{HIT_K}": round(hit_rate(matrix, item_ids, baskets), 4)}
    result["method"] = params.method
    return result


def _fields(params) -> dict:
    return {f: getattr(params, f) for f in params.__dataclass_fields__}


# ---- audiences --------------------------------------------------------------------------------------------
def histories(
    events_path: str | Path, end: dt.datetime, item_ids: np.ndarray, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, funnel.Behaviour]:
    """(user ids, left-padded history matrix in the model's indices, event counts, the histories' behaviour) as of
    `end`: every event before it, merged into steps as the features job merges them (funnel.append_events: an event on
    the item of the step before joins it, its type flags OR-ed in, the step's time its first event's), the last
    max_len, each with its type flags and the seconds since the step before; the request at `end`. The events come
    from DuckDB as integer columns (queries/history_events.sql) and are merged in NumPy: memory holds a few integers
    an event, never a user's history as strings."""
    import pandas as pd

    vocab = pd.DataFrame(
        {"item_id": item_ids[schema.NUM_RESERVED :], "item_index": np.arange(schema.NUM_RESERVED, len(item_ids))}
    )
    flags = pd.DataFrame({"event_type": list(schema.EVENT_TYPES), "flag": [event_flag(t) for t in schema.EVENT_TYPES]})
    with _connect() as con:
        con.register("vocab", vocab)
        con.register("flags", flags)
        users = con.execute(
            "SELECT DISTINCT user_id FROM read_parquet($events) WHERE event_ts < $end ORDER BY user_id",
            {"events": str(events_path), "end": end},
        ).fetchnumpy()["user_id"]
        events = con.execute(
            (complementary.QUERIES / "history_events.sql").read_text(), {"events": str(events_path), "end": end}
        ).fetchnumpy()
    columns = {name: np.asarray(values, np.int64) for name, values in events.items()}
    hist, types, gaps, request_gap = _last_steps(columns, len(users), max_len, int(end.timestamp()))
    activity = np.bincount(columns["user_code"], minlength=len(users)).astype(np.int64)
    return np.asarray(users, dtype=object), hist, activity, funnel.Behaviour(types, gaps, request_gap)


def _last_steps(events: dict[str, np.ndarray], num_users: int, max_len: int, request_ts: int):
    """(items, type flags, gaps [users, max_len], left-padded; request gaps [users]) of the events in user then time
    order: a step starts at a user's first event and wherever the item changes; it takes the OR of its events' flags
    and its first event's time; its gap is the seconds since the user's step before (NO_GAP for the first)."""
    user, item_code, ts = events["user_code"], events["item_code"], events["ts"]
    hist = np.zeros((num_users, max_len), np.int64)
    types = np.zeros((num_users, max_len), np.int64)
    gaps = np.full((num_users, max_len), schema.NO_GAP, np.int64)
    request_gap = np.full(num_users, schema.NO_GAP, np.int64)
    if not len(user):
        return hist, types, gaps, request_gap
    starts = np.ones(len(user), bool)
    starts[1:] = (user[1:] != user[:-1]) | (item_code[1:] != item_code[:-1])
    first = np.flatnonzero(starts)
    step_user, step_ts = user[first], ts[first]
    step_flags = np.bitwise_or.reduceat(events["flag"], first)
    opens_user = np.ones(len(first), bool)
    opens_user[1:] = step_user[1:] != step_user[:-1]
    step_gap = np.where(opens_user, schema.NO_GAP, np.maximum(step_ts - np.roll(step_ts, 1), 0))
    last_step = np.flatnonzero(np.append(step_user[1:] != step_user[:-1], True))  # per user, in user order
    from_end = last_step[step_user] - np.arange(len(first))
    kept = from_end < max_len
    rows, cols = step_user[kept], max_len - 1 - from_end[kept]
    hist[rows, cols] = events["item_index"][first][kept]
    types[rows, cols] = step_flags[kept]
    gaps[rows, cols] = step_gap[kept]
    request_gap[step_user[last_step]] = np.maximum(request_ts - step_ts[last_step], 0)
    return hist, types, gaps, request_gap


def _purchases(events_path, items_path, start, end) -> list[tuple[str, str, str]]:
    with _connect() as con:
        return con.execute(
            "SELECT e.user_id, e.item_id, i.category FROM read_parquet(?) e JOIN read_parquet(?) i USING (item_id) "
            "WHERE e.event_type = 'purchase' AND (? IS NULL OR e.event_ts >= ?) AND e.event_ts < ?",
            [str(events_path), str(items_path), start, start, end],
        ).fetchall()


def evaluate_audiences(
    extracted_dir: str | Path,
    features_dir: str | Path,
    retriever,
    ranker,
    item_ids: np.ndarray,
    history_end: dt.datetime,
    window_end: dt.datetime,
    targets_spec: str = "",
    items_per_category: int = 10,
) -> dict:
    """{"<method>": {"precision@1%", "recall@1%", "precision@10%", "recall@10%"}, "k": {...}, "targets": [...]}."""
    from components.export.inputs import read_catalogue

    events_path = Path(extracted_dir, "events.parquet")
    items_path = Path(extracted_dir, "items.parquet")
    spec = schema.FeatureSpec.read(features_dir)
    _, available, popularity = read_catalogue(features_dir, spec.num_items)
    categories = audiences.item_categories(features_dir, spec.num_items)
    before = _purchases(events_path, items_path, None, history_end)
    sales = audiences.category_sales(extracted_dir, history_end)
    targets = audiences.resolve_targets(
        targets_spec, item_ids, categories, popularity, available, sales, items_per_category
    )
    users, hist, activity, behaviour = histories(events_path, history_end, item_ids, spec.max_len)
    scored = ~funnel.needs_fallback(hist)
    users, hist, activity, behaviour = users[scored], hist[scored], activity[scored], behaviour.take(scored)
    position = {u: i for i, u in enumerate(users)}
    model = audiences.score_targets(retriever, ranker, hist, targets, behaviour=behaviour)

    def target_rows(rows):
        matrix = np.zeros((len(targets), len(users)), dtype=np.float64)
        for user, item, category in rows:
            u = position.get(user)
            if u is None:
                continue
            for t, target in enumerate(targets):
                if (target.kind == "category" and category == target.id) or (
                    target.kind == "item" and item == target.id
                ):
                    matrix[t, u] += 1
        return matrix

    future = target_rows(_purchases(events_path, items_path, history_end, window_end)) > 0
    # for an item target, "bought in the category before" counts purchases in the item's category
    by_category = [
        audiences.Target("category", categories[t.candidates[0]], t.candidates) if t.kind == "item" else t
        for t in targets
    ]
    bought_before = np.zeros((len(targets), len(users)))
    for user, _, category in before:
        u = position.get(user)
        if u is not None:
            for t, target in enumerate(by_category):
                bought_before[t, u] += category == target.id
    tie_break = activity / (activity.max() + 1.0)
    methods = {
        "ranker": model.ranker,
        "funnel": model.funnel,
        "bought_category_before": bought_before + tie_break,
        "most_active": np.broadcast_to(activity.astype(np.float64), (len(targets), len(users))),
    }
    ks = {name: max(1, round(share * len(users))) for name, share in AUDIENCE_SHARES.items()}
    result = {name: audiences.precision_recall(scores, future, ks) for name, scores in methods.items()}
    result["k"] = ks
    result["users"] = len(users)
    result["targets"] = [{"target": f"{t.kind}:{t.id}", "future_buyers": int(b.sum())} for t, b in zip(targets, future)]
    result["window"] = {"history_end": history_end.isoformat(), "window_end": window_end.isoformat()}
    return result


# ---- in the pipeline ----------------------------------------------------------------------------------------
def evaluate_run(features_dir, extracted_dir, model, outputs) -> dict:
    """The evaluation stage's campaign figures, by the candidate model (a ServingModel on the features' vocabulary).

    On a time split, with its cut and windows. Under leave-last-out audiences need a future the model has not seen,
    so they are left out with the reason; complementary items are measured on the baskets after the 80% quantile
    of the event times, with the caveat that the retrieval model (the fallback's and similar items') saw them."""

    spec = schema.FeatureSpec.read(features_dir)
    window = schema.FeaturesManifest.read(features_dir).split_window
    events_path = Path(extracted_dir, "events.parquet")
    result = {"split": spec.split}
    if spec.split == "time" and window:
        cut, days = dt.datetime.fromisoformat(window["cut"]), dt.timedelta(days=float(window["window_days"]))
    else:
        cut, days = quantile_cut(events_path, CUT_QUANTILE), None
        result["caveat"] = (
            "leave-last-out split: co-occurrence counts only baskets before the cut, but the retrieval model behind "
            "the fallback and similar items trained on the held-out period too"
        )
    result["cut"] = cut.isoformat()
    retriever, ranker, item_ids = model.retriever, model.ranker, model.item_ids
    if "complementary_items" in outputs:
        available = getattr(retriever, "available", None)
        if available is None:
            available = np.ones(len(item_ids), dtype=bool)
        result["complementary_items"] = evaluate_complementary(
            events_path, cut, retriever, ranker.item_category, item_ids, available
        )
    if "audiences" in outputs:
        if days is None:
            result["audiences_skipped"] = "audiences are measured on a time split (split=time): future buyers"
        else:
            result["audiences"] = evaluate_audiences(
                extracted_dir, features_dir, retriever, ranker, item_ids, cut + days, cut + 2 * days
            )
    return result


CAMPAIGN_FILE = "campaign.json"


def run(
    features: str,
    extracted: str,
    retrieval_model: str,
    ranking_model: str,
    report: str,
    campaign_outputs: str = "complementary_items,audiences",
) -> dict[str, float]:
    """The campaign evaluation task's entry: loads the candidate models, writes campaign.json into the folder
    `report` (atomically; evaluation reads it into its report) and returns the headline figures."""
    from components import atomic
    from components.serving.models import load_serving_model

    names = tuple(n.strip() for n in (campaign_outputs or "").split(",") if n.strip())
    if names:
        model = load_serving_model(retrieval_model, ranking_model, "candidate")
        result = evaluate_run(features, extracted, model, names)
    else:
        result = {"skipped": "campaign_outputs is empty: no complementary items or audiences this run"}
    with atomic.staged_directory(report, last=CAMPAIGN_FILE) as staging:
        atomic.write_json(staging / CAMPAIGN_FILE, result)
    figures = {}
    for method, values in (result.get("complementary_items") or {}).items():
        if isinstance(values, dict):
            figures[f"complementary_{method}_hit_at_10"] = values[f"hit@{HIT_K}"]
    for method, values in (result.get("audiences") or {}).items():
        if isinstance(values, dict) and method not in ("k", "window"):
            for key, value in values.items():
                figures[f"audiences_{method}_{key.replace('@', '_at_').replace('%', 'pct')}"] = value
    return figures


# ---- bench ------------------------------------------------------------------------------------------------
SYNTHETIC_WINDOW_DAYS = 7.0  # the synthetic shop's last weeks are thin: a week of buyers per target
CUT_QUANTILE = 0.8


def campaign_bench(
    extracted_dir: str | Path,
    features_dir: str | Path | None,
    work_dir: str | Path,
    retrieval_dir: str | Path | None = None,
    ranking_dir: str | Path | None = None,
    seed: int = 0,
    ranking_epochs: int = 3,
    ranking_refit_epochs: int = 2,
    ranking_train_input: str = "auto",
    split_cut: str | None = None,
    window_days: float = SYNTHETIC_WINDOW_DAYS,
    max_examples_per_user: int | None = None,
    retrieval: dict | None = None,
) -> dict:
    """{"complementary_items": ..., "audiences": ...} on a time split. Features built with split=time (Taobao's
    bench) are used with their models; otherwise a time split is built here and retrieval and DIEN are trained on
    it, so no model has seen the window: cut at `split_cut` ("" the features job's default, the last two windows;
    None the 80% quantile of the event times), windows of `window_days`; the run's `max_examples_per_user` (None: the
    features job's default), `retrieval` settings (RetrievalConfig fields), `ranking_epochs`,
    `ranking_refit_epochs` and `ranking_train_input` train them."""

    from components.ranking.export import load_ranker
    from components.retrieval.model_io import load_retriever
    from components.serving.models import read_model_item_ids

    work_dir = Path(work_dir)
    events_path = Path(extracted_dir, "events.parquet")
    spec = schema.FeatureSpec.read(features_dir) if features_dir else None
    window = schema.FeaturesManifest.read(features_dir).split_window if spec else None
    notes = []
    if spec and spec.split == "time" and window and retrieval_dir and ranking_dir:
        cut = dt.datetime.fromisoformat(window["cut"])
        days = float(window["window_days"])
    else:
        from components.features.pipeline import run_features
        from components.isolation import in_fresh_process
        from components.ranking import stage as ranking_stage
        from components.retrieval.stage import run as run_retrieval

        days = window_days
        if split_cut is None:
            split_cut = quantile_cut(events_path, CUT_QUANTILE).isoformat()
            days = fitted_window_days(events_path, dt.datetime.fromisoformat(split_cut), window_days)
        features_dir = work_dir / "features-time"
        retrieval_dir, ranking_dir = work_dir / "retrieval-time", work_dir / "ranking-time"
        cap = {} if max_examples_per_user is None else {"max_examples_per_user": max_examples_per_user}
        # each trainer in a process of its own, as each is a container of the pipeline's (components/isolation.py):
        # what the features job and the trainers allocated is returned before the next starts and the audiences
        stats = in_fresh_process(
            run_features,
            str(extracted_dir),
            str(features_dir),
            seed=seed,
            split="time",
            split_cut=split_cut,
            split_window_days=days,
            **cap,
        )
        cut = dt.datetime.fromisoformat(stats["split_window"]["cut"])
        in_fresh_process(run_retrieval, features_dir, retrieval_dir, seed=seed, **(retrieval or {}))
        in_fresh_process(
            ranking_stage.run,
            str(features_dir),
            str(ranking_dir),
            "dien",
            ranking_epochs,
            seed,
            retrieval_model=str(retrieval_dir),
            refit_epochs=ranking_refit_epochs,
            train_input=ranking_train_input,
        )
        notes.append(
            f"time split built for this stage: cut {cut.isoformat()}, windows of {days:g} days; retrieval "
            f"({retrieval or 'its defaults'}) and DIEN ({ranking_epochs} epochs, refit {ranking_refit_epochs}) "
            "trained on it"
        )
    retriever = load_retriever(str(retrieval_dir))
    ranker = load_ranker(str(ranking_dir))
    item_ids = read_model_item_ids(retrieval_dir, retriever.item_embeddings.shape[0])
    comp = evaluate_complementary(events_path, cut, retriever, ranker.item_category, item_ids, retriever.available)
    comp["cut"] = cut.isoformat()
    window_days = dt.timedelta(days=days)
    aud = evaluate_audiences(
        extracted_dir, features_dir, retriever, ranker, item_ids, cut + window_days, cut + 2 * window_days
    )
    result = {"complementary_items": comp, "audiences": aud}
    if notes:
        result["notes"] = notes
    return result
