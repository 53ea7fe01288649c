"""The refit through valid: after the epoch is selected on valid, the selected model trains on with the valid
examples as new rows, so the served model is trained through each user's last event before the test one."""

import dataclasses

import numpy as np
import pytest

from components.retrieval import training
from components.retrieval.config import UNRECORDED, RetrievalConfig
from components.retrieval.data import concatenate_examples, load_catalogue, load_examples

pytestmark = pytest.mark.slow  # two small trainings

SETTINGS = dict(embedding_dim=16, max_len=10, batch_size=128, epochs=2, patience=2, seed=3, refit_epochs=2)


@pytest.fixture(scope="module")
def refitted(shop_features):
    config = RetrievalConfig(**SETTINGS)
    catalogue = load_catalogue(shop_features)
    train_set, valid_set = (load_examples(shop_features, split, 10) for split in ("train", "valid"))
    keys = training.example_keys(shop_features, train_set, catalogue)
    selected = training.train(train_set, valid_set, catalogue, config, None, keys)
    selected_valid = training.evaluate(selected.model, valid_set)
    selected_items = selected.model.item_embeddings()
    valid_keys = training.example_keys(shop_features, valid_set, catalogue)
    evaluations, evaluate = [], training.evaluate
    training.evaluate = lambda model, examples: evaluations.append(len(examples)) or evaluate(model, examples)
    try:
        refit = training.refit_through_valid(selected, train_set, valid_set.target_item, valid_set, valid_keys)
    finally:
        training.evaluate = evaluate
    return (
        selected,
        selected_valid,
        selected_items,
        refit,
        train_set,
        valid_set,
        keys,
        valid_keys,
        catalogue,
        evaluations,
    )


def test_refit_keeps_the_selection_figures_and_trains_on_the_valid_rows(refitted):
    selected, selected_valid, selected_items, refit, train_set, valid_set, keys, valid_keys, catalogue, evaluations = (
        refitted
    )
    assert evaluations == []  # valid is in the refit's training data: no epoch of it is validated
    assert refit.valid_metrics == selected.valid_metrics and refit.best_epoch == selected.best_epoch
    assert refit.history == selected.history  # the curve is the selection's: valid is training data afterwards
    assert refit.refit["epochs"] == 2 and refit.refit["valid_rows"] == len(valid_set)
    assert refit.train_cpu_s > selected.train_cpu_s
    assert not np.allclose(refit.model.item_embeddings(), selected_items)
    # trained on the valid examples: the model now fits them better than the selected one did
    assert training.evaluate(refit.model, valid_set)["ndcg@20"] > selected_valid["ndcg@20"]
    np.testing.assert_array_equal(refit.train_keys, np.concatenate([keys, valid_keys]))
    counts = np.bincount(valid_set.target_item, minlength=catalogue.num_items)
    np.testing.assert_array_equal(refit.catalogue.train_count, catalogue.train_count + counts)


def test_concatenated_examples_are_both_sets_in_order(refitted):
    *_, train_set, valid_set, _, _, _, _ = refitted
    both = concatenate_examples(train_set, valid_set)
    assert len(both) == len(train_set) + len(valid_set) and both.seen_items is None
    np.testing.assert_array_equal(both.hist_items[len(train_set) :], valid_set.hist_items)
    np.testing.assert_array_equal(both.gaps()[1][: len(train_set)], train_set.gaps()[1])
    np.testing.assert_array_equal(both.user, np.concatenate([train_set.user, valid_set.user]))


def test_an_artifact_without_the_field_did_not_refit_and_a_negative_count_is_refused():
    assert UNRECORDED["refit_epochs"] == 0
    with pytest.raises(ValueError, match="refit_epochs"):
        dataclasses.replace(RetrievalConfig(), refit_epochs=-1)


def test_the_artifact_keeps_the_selected_model_for_scoring_valid(refitted, tmp_path):
    from components.retrieval import export
    from components.retrieval.model_io import load_retriever, load_valid_retriever

    selected, _, selected_items, refit, *_ = refitted
    assert refit.selected is not None and refit.selected[0] is selected.model
    model_dir = export.export(refit.model, refit.catalogue, refit.config, tmp_path / "model", selected=refit.selected)
    assert (model_dir / export.SELECTED / "config.json").exists() and not (
        model_dir / export.SELECTED / "index"
    ).exists()
    np.testing.assert_allclose(load_valid_retriever(model_dir).item_embeddings[2:], selected_items[2:], atol=1e-6)
    np.testing.assert_allclose(
        load_retriever(model_dir).item_embeddings[2:], refit.model.item_embeddings()[2:], atol=1e-6
    )
    # a model without a refit scores valid itself
    plain = export.export(selected.model, selected.catalogue, selected.config, tmp_path / "plain")
    assert not (plain / export.SELECTED).exists()
    np.testing.assert_allclose(load_valid_retriever(plain).item_embeddings[2:], selected_items[2:], atol=1e-6)


def test_valid_max_users_selects_on_a_hash_sample_and_refits_on_every_valid_row(shop_features, monkeypatch):
    from components import schema
    from components.metrics import sample_users

    seen = {}
    train, refit = training.train, training.refit_through_valid

    def recording_train(train_set, valid_set, *args, **kwargs):
        seen.setdefault("selection", valid_set)
        return train(train_set, valid_set, *args, **kwargs)

    def recording_refit(selected, train_set, valid_targets, *args, **kwargs):
        seen["refit"] = valid_targets
        return refit(selected, train_set, valid_targets, *args, **kwargs)

    monkeypatch.setattr(training, "train", recording_train)
    monkeypatch.setattr(training, "refit_through_valid", recording_refit)
    config = RetrievalConfig(**{**SETTINGS, "epochs": 1, "refit_epochs": 1, "valid_max_users": 100})
    result = training.train_from_features(shop_features, config)
    valid_set = load_examples(shop_features, "valid", 10)
    ids = schema.indexed_vocab(shop_features, schema.USER_VOCAB)
    rows = sample_users(ids[valid_set.user], 100)
    selection = seen["selection"]
    assert len(selection) == 100 and len(seen["refit"]) == len(valid_set) > 100
    np.testing.assert_array_equal(selection.user, valid_set.user[rows])
    np.testing.assert_array_equal(selection.hist_items, valid_set.hist_items[rows])
    assert [list(s) for s in selection.seen_items] == [list(valid_set.seen_items[r]) for r in rows]
    assert result.refit["valid_rows"] == len(valid_set)
    assert UNRECORDED["valid_max_users"] == 0
    with pytest.raises(ValueError, match="valid_max_users"):
        RetrievalConfig(valid_max_users=-1)


def test_the_fusion_weight_is_chosen_on_the_retrieval_models_valid_sample(shop_features, monkeypatch):
    """serving.fusion.choose_on_split reads valid_max_users from the retrieval model's config: the funnel over valid
    (a full-catalogue retrieval and the ranker on 200 candidates per user) runs on the users its selection scored."""
    import types

    from components import schema
    from components.features import reader
    from components.metrics import sample_users
    from components.serving import fusion

    hist, seen, targets, _ = fusion.split_rows(shop_features, "valid", 100)
    valid = reader.load_numpy(shop_features, schema.RETRIEVAL_DIR, "valid")
    ids = schema.indexed_vocab(shop_features, schema.USER_VOCAB)
    rows = sample_users(ids[valid[schema.USER]], 100)
    assert len(targets) == 100 and list(targets) == list(valid[schema.TARGET_ITEM][rows])
    assert len(fusion.split_rows(shop_features, "valid")[2]) == len(valid[schema.TARGET_ITEM])
    scored = []

    def candidate_scores(retriever, ranker, hist, seen, targets, n, behaviour=None):
        scored.append(len(hist))
        cands = np.tile(np.arange(2, 2 + n), (len(hist), 1))
        return cands, np.full(cands.shape, 0.5, np.float32), np.zeros(cands.shape, np.float32)

    monkeypatch.setattr(fusion, "candidate_scores", candidate_scores)
    retriever = types.SimpleNamespace(config=RetrievalConfig(valid_max_users=100))
    assert fusion.choose_on_split(retriever, None, shop_features)["valid_users"] == 100 and scored == [100]
