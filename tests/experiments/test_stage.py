"""The pipeline entry points: the bandit stage's history and feedback handling, and the KFP shells under kfp.local."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.evaluation import data as evaluation_data
from components.experiments import histories, stage
from components.experiments.bandit import BayesianLinearBandit, reranker_features
from components.experiments.bayesian_fm import BayesianFM
from components.kfp_metrics import finite_metrics
from components.warehouse.build import build_warehouse


def test_user_histories_collapse_repeats_and_left_pad():
    events = pd.DataFrame({"user_id": ["a", "a", "a", "a", "b"], "item_id": ["x", "x", "y", "zz", "y"]})
    index = {"x": 2, "y": 3}
    category = np.array([0, 1, 5, 6])
    rows, items, cats = histories.user_histories(events, index, category, max_len=4)
    assert rows == {"a": 0, "b": 1}
    np.testing.assert_array_equal(items, [[0, 2, 3, 1], [0, 0, 0, 3]])  # "zz" is out of vocabulary (1)
    np.testing.assert_array_equal(cats, [[0, 5, 6, 1], [0, 0, 0, 6]])
    _, short, _ = histories.user_histories(events, index, category, max_len=2)
    np.testing.assert_array_equal(short, [[3, 1], [0, 3]])


def test_lookup_maps_each_value_and_gives_missing_for_absent_and_null_ids():
    ids = pd.Series(["b", None, "zz", "a", "b"], dtype="string")
    np.testing.assert_array_equal(histories.lookup(ids, {"a": 4, "b": 7}, -1), [7, -1, -1, 4, 7])
    np.testing.assert_array_equal(histories.lookup(("view", "cart"), {"cart": 2}, 0), [0, 2])
    assert histories.lookup(pd.Series([], dtype="string"), {"a": 1}, -1).shape == (0,)


def test_user_behaviour_gives_each_steps_event_types_and_gap_and_the_request_gap_at_the_logs_end():
    seconds = [0, 30, 100, 160, 500]
    events = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b"],
            "item_id": ["x", "x", "y", "zz", "y"],
            "event_type": ["view", "cart", "view", "purchase", "view"],
            "event_ts": pd.to_datetime(seconds, unit="s", utc=True),
        }
    )
    index = {"x": 2, "y": 3}
    rows, _, _ = histories.user_histories(events, index, np.array([0, 1, 5, 6]), max_len=4)
    got = histories.user_behaviour(events, index, rows, max_len=4)
    view, cart, purchase = 1, 2, 8  # the bits of schema.EVENT_TYPES
    np.testing.assert_array_equal(got.types, [[0, view | cart, view, purchase], [0, 0, 0, view]])
    np.testing.assert_array_equal(got.gaps, [[-1, -1, 100, 60], [-1, -1, -1, -1]])  # a step's time: its first event's
    np.testing.assert_array_equal(got.request_gap, [500 - 160, 0])
    short = histories.user_behaviour(events, index, rows, max_len=2)
    np.testing.assert_array_equal(short.gaps, [[100, 60], [-1, -1]])


class RetrieverDouble:
    """The Retriever API the stage uses: item_embeddings, item_category, encode (mean of history embeddings)."""

    def __init__(self):
        self.item_embeddings = np.array([[0, 0], [0, 0], [1.0, 0.0], [0.0, 1.0]])
        self.item_category = np.array([0, 1, 2, 2])

    def encode(self, hist_items, hist_cats):
        return self.item_embeddings[hist_items].sum(axis=1) / np.maximum((hist_items > 0).sum(axis=1), 1)[:, None]


def test_fit_from_logs_equals_updating_with_the_logged_contexts():
    retriever = RetrieverDouble()
    events = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]})
    impressions = pd.DataFrame(
        {
            "user_id": ["a", "a", "b", "ghost"],
            "item_id": ["x", "y", "x", "x"],
            "position": [0, 1, 0, 0],
            "clicked": [True, False, False, True],
        }
    )
    fitted, rows = stage.fit_bandit_from_logs(
        retriever,
        impressions,
        events,
        {"x": 2, "y": 3},
        max_len=3,
        noise_variance=0.5,
        prior_precision=2.0,
        exploration=1.0,
    )
    assert rows == 3  # the user without history is left out
    query = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    items = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])[:, None, :]
    contexts = reranker_features(query, items, np.einsum("bd,bnd->bn", query, items))[:, 0, :]
    expected = BayesianLinearBandit.create(6, 2, 2.0, 0.5)
    expected.update(contexts, np.array([0, 1, 0]), np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(fitted.mean, expected.mean)


class TimedRetrieverDouble(RetrieverDouble):
    """A retriever whose query tower reads time: the query's first coordinate gains the request gap in hours."""

    reads_gaps = True

    def encode(self, hist_items, hist_cats, behaviour=None):
        query = super().encode(hist_items, hist_cats)
        if behaviour is not None:
            query = query + np.stack([np.asarray(behaviour.request_gap) / 3600.0, np.zeros(len(query))], axis=1)
        return query


def test_the_warm_start_encodes_queries_with_the_gaps_the_funnel_retrieves_with():
    """Users a (views x at 0 h, y at 1 h) and b (views y at 3 h): the log ends at 3 h, so a's request gap is 2 h and
    b's 0 h; a retriever that reads time gets them (funnel.retrieval_queries), and without the events' times the
    query is the gapless one."""
    hours = pd.to_datetime([0, 3600, 3 * 3600], unit="s", utc=True)
    events = pd.DataFrame(
        {"user_id": ["a", "a", "b"], "item_id": ["x", "y", "y"], "event_type": ["view"] * 3, "event_ts": hours}
    )
    impressions = pd.DataFrame(
        {"user_id": ["a", "b"], "item_id": ["x", "y"], "position": [0, 1], "clicked": [True, False]}
    )

    def fitted(retriever, log):
        model, _ = stage.fit_bandit_from_logs(retriever, impressions, log, {"x": 2, "y": 3}, 3, 0.5, 2.0, 1.0)
        return model.mean

    def expected(query):
        items = np.array([[1.0, 0.0], [0.0, 1.0]])[:, None, :]
        contexts = reranker_features(query, items, np.einsum("bd,bnd->bn", query, items))[:, 0, :]
        model = BayesianLinearBandit.create(6, 2, 2.0, 0.5)
        model.update(contexts, np.array([0, 1]), np.array([1.0, 0.0]))
        return model.mean

    gapless = np.array([[0.5, 0.5], [0.0, 1.0]])  # mean of x and y; y
    np.testing.assert_allclose(fitted(TimedRetrieverDouble(), events), expected(gapless + [[2.0, 0], [0.0, 0]]))
    untimed = events[["user_id", "item_id"]]
    np.testing.assert_allclose(fitted(TimedRetrieverDouble(), untimed), expected(gapless))
    np.testing.assert_allclose(fitted(RetrieverDouble(), events), expected(gapless))  # reads no time: ignores them


class CountingRetrieverDouble(TimedRetrieverDouble):
    """Records the histories and request gaps each encode call is given."""

    def __init__(self):
        super().__init__()
        self.encoded = []

    def encode(self, hist_items, hist_cats, behaviour=None):
        self.encoded.append((np.asarray(hist_items), np.asarray(behaviour.request_gap)))
        return super().encode(hist_items, hist_cats, behaviour)


def test_fit_from_logs_encodes_each_logged_user_once_across_chunks(monkeypatch):
    """Users interleaved over chunks of 2 slots, c (history row 0) never shown: one encode of a's and b's history
    rows with their own request gaps, and the posterior of one update per chunk with each slot's user's query."""
    monkeypatch.setattr(stage, "FEEDBACK_CHUNK", 2)
    hours = pd.to_datetime([0, 3600, 3 * 3600], unit="s", utc=True)
    events = pd.DataFrame(
        {"user_id": ["c", "a", "b"], "item_id": ["y", "x", "y"], "event_type": ["view"] * 3, "event_ts": hours}
    )
    impressions = pd.DataFrame(
        {
            "user_id": ["b", "a", "ghost", "b", "a", "b"],
            "item_id": ["x", "y", "x", "y", "x", "x"],
            "position": [0, 1, 0, 1, 0, 1],
            "clicked": [True, False, True, False, False, True],
        }
    )
    retriever = CountingRetrieverDouble()
    fitted, rows = stage.fit_bandit_from_logs(retriever, impressions, events, {"x": 2, "y": 3}, 3, 0.5, 2.0, 1.0)
    assert rows == 5
    [(histories_encoded, request_gaps)] = retriever.encoded
    np.testing.assert_array_equal(histories_encoded, [[0, 0, 2], [0, 0, 3]])  # a's and b's
    np.testing.assert_array_equal(request_gaps, [2 * 3600, 0])
    a, b = [1.0 + 2.0, 0.0], [0.0, 1.0]  # x plus a's 2 h request gap; y
    query = np.array([b, a, b, a, b])
    items = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])[:, None, :]
    contexts = reranker_features(query, items, np.einsum("bd,bnd->bn", query, items))[:, 0, :]
    expected = BayesianLinearBandit.create(6, 2, 2.0, 0.5)
    positions, clicks = np.array([0, 1, 1, 0, 1]), np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    for start in range(0, 5, 2):
        expected.update(contexts[start : start + 2], positions[start : start + 2], clicks[start : start + 2])
    np.testing.assert_allclose(fitted.mean, expected.mean)
    prior = BayesianLinearBandit.create(6, 1, 2.0, 0.5).mean
    ghosts = impressions[impressions.user_id == "ghost"]  # no history: nothing encoded, the prior
    for log, shown in ((events, ghosts), (events[:0], impressions)):  # and a log without events
        none_known, rows = stage.fit_bandit_from_logs(retriever, shown, log, {"x": 2, "y": 3}, 3, 0.5, 2.0, 1.0)
        assert (rows, len(retriever.encoded)) == (0, 1)
        np.testing.assert_allclose(
            none_known.mean, prior if len(shown) == 1 else BayesianLinearBandit.create(6, 2, 2.0, 0.5).mean
        )


def test_mutes_logged_for_some_rows_only_are_refused_by_the_warm_start_as_by_the_estimators():
    import pyarrow as pa

    from components.experiments import ope

    base = {"user_id": ["a", "a", "b"], "item_id": ["x", "y", "x"], "position": [0, 1, 0]}
    base["clicked"] = [True, False, False]
    assert not stage.mutes_logged(pd.DataFrame(base))  # written before the column
    assert not stage.mutes_logged(pd.DataFrame(base | {"muted": [None, None, None]}))  # a logger without mutes
    assert stage.mutes_logged(pd.DataFrame(base | {"muted": [False, True, False]}))
    partial = pd.DataFrame(base | {"muted": [False, None, True]})
    with pytest.raises(ope.LogError, match="no `muted` value"):
        stage.mutes_logged(partial)
    events = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"]})
    with pytest.raises(ope.LogError, match="no `muted` value"):
        stage.fit_bandit_from_logs(RetrieverDouble(), partial, events, {"x": 2, "y": 3}, 3, 0.5, 2.0, 1.0)
    with pytest.raises(ope.LogError, match="no `muted` value"):  # the same table, the same rule
        ope.logged_mutes(pa.table(partial).column("muted"))


@pytest.fixture(scope="module")
def tiny_warehouse(tmp_path_factory):
    path = tmp_path_factory.mktemp("wh") / "shop.duckdb"
    build_warehouse("synthetic:tiny", path, 0)
    return path


def test_components_run_under_kfp_local(tiny_warehouse, tmp_path):
    from kfp import dsl, local

    from components.experiments.component import ab_analysis, off_policy_evaluation

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    uri = f"duckdb://{tiny_warehouse}"

    @dsl.pipeline
    def experiments(warehouse_uri: str) -> dsl.Artifact:
        ab_analysis(warehouse_uri=warehouse_uri, experiment="exp", treatment_ratio=0.5)
        task = off_policy_evaluation(
            warehouse_uri=warehouse_uri, shop_preset="tiny", repeats=2, requests_per_log=800, bandit_rounds=12
        )
        return task.outputs["report"]

    report = Path(experiments(warehouse_uri=uri).output.path)
    result = json.loads((report / "ope.json").read_text())
    assert set(result) == {"ab", "ope", "bandit", "logged"} and result["ope"]["repeats"] == 2
    assert (report / "ope_estimates.png").exists() and not (report / "experiments.html").exists()
    read = evaluation_data.read_off_policy(report)  # the evaluation stage reads this output
    assert read.result == result and set(read.figures) == {"ope_estimates", "bandit_curves"}
    outputs = " ".join(p.read_text() for p in (tmp_path / "root").rglob("executor_output.json"))
    for metric in (
        "ope_truth",
        "ope_logged_click_rate",
        "ope_mrdr_rmse",
        "bandit_thompson_cumulative_reward",
        "ab_chi2_p",
    ):
        assert f'"{metric}"' in outputs, f"metric {metric} not logged"


def test_logged_click_rate_counts_every_impression(tiny_warehouse):
    import duckdb

    with duckdb.connect(str(tiny_warehouse), read_only=True) as con:
        clicked = [row[0] for row in con.execute("SELECT clicked FROM impressions").fetchall()]
    logged = stage.logged_click_rate(str(tiny_warehouse))
    assert logged == {"impressions": len(clicked), "clicks": sum(clicked), "click_rate": sum(clicked) / len(clicked)}


def test_off_policy_evaluation_skips_without_impressions(tmp_path):
    from components.warehouse.duckdb_warehouse import WarehouseWriter

    path = tmp_path / "public.duckdb"
    with WarehouseWriter(path, ("events", "items")) as writer:
        writer.commit()
    out = stage.run_off_policy_evaluation(str(path), "tiny", str(tmp_path / "ope"))
    assert "no impressions" in out["skipped"] and not finite_metrics(out)
    assert json.loads((tmp_path / "ope" / "skipped.json").read_text())["skipped"] == out["skipped"]
    assert evaluation_data.read_off_policy(tmp_path / "ope").unavailable == out["skipped"]  # the gate's no-op reason
    out = stage.run_ab_analysis(str(path), str(tmp_path / "ab"), "exp", 0.5)
    assert "no impressions" in out["skipped"] and not finite_metrics(out)


def test_stages_skip_what_they_cannot_compute(tiny_warehouse, tmp_path):
    out = stage.run_off_policy_evaluation(str(tiny_warehouse), "", str(tmp_path / "ope"))
    assert "no shop_preset" in out["skipped"]
    out = stage.run_ab_analysis(str(tiny_warehouse), str(tmp_path / "ab"), "exp", 1.0)
    assert "one arm" in out["skipped"] and not finite_metrics(out)
    assert (tmp_path / "ab" / "skipped.json").exists()


def test_bandit_stage_writes_a_servable_model(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from components import schema
    from components.retrieval import model_io

    monkeypatch.setattr(model_io, "load_retriever", lambda path: RetrieverDouble())
    features = tmp_path / "features"
    (features / schema.VOCAB_DIR).mkdir(parents=True)
    schema.write_vocab(features, schema.ITEM_VOCAB, ["x", "y"])
    schema.FeatureSpec(max_len=3, num_items=4, num_categories=3, num_users=2, ranking_task="cvr").write(features)
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    pq.write_table(pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"]}), extracted / "events.parquet")
    pq.write_table(
        pa.table({"user_id": ["a", "b"], "item_id": ["y", "x"], "position": [0, 1], "clicked": [True, False]}),
        extracted / "impressions.parquet",
    )
    figures = stage.run_bandit_reranker(str(features), str(extracted), "unused", str(tmp_path / "bandit"))
    assert figures == {"bandit_feedback_rows": 2.0}
    model = BayesianLinearBandit.load(tmp_path / "bandit")
    assert model.num_positions == 2 and model.context_dim == 6
    assert (tmp_path / "bandit" / "saved_model" / "saved_model.pb").exists()
    summary = json.loads((tmp_path / "bandit" / "summary.json").read_text())
    assert summary["impressions"] == 2 and summary["fm"]["fields"] == list(stage.FM_FIELDS)
    with np.load(tmp_path / "bandit" / stage.FM_FILE) as arrays:
        fm = BayesianFM.from_arrays(arrays)
    assert fm.num_positions == 2 and fm.dense_dim == 6
    np.testing.assert_array_equal(fm.fields[0].seen, [True, True])  # both logged users' blocks were updated
    assert not np.array_equal(fm.fields[0].precision[0], fm.prior_block_precision)
