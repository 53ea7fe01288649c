"""A small model must beat popularity and item-to-item on data with real sequential signal."""

import numpy as np

from components import baselines, metrics
from components.retrieval import training
from components.retrieval.data import load_examples


def test_small_model_beats_the_baselines(shop_features, trained_small):
    result = trained_small
    test = load_examples(shop_features, "test", 10)
    model_metrics = training.evaluate(result.model, test)

    sequences = baselines.from_features(shop_features)
    histories = [row[row > 0] for row in test.hist_items]
    for baseline in (baselines.Popularity(sequences), baselines.ItemToItem(sequences)):
        ranks = baselines.evaluate(baseline, histories, test.target_item, test.seen_items)
        reference = metrics.ranking_metrics(ranks)
        for key in ("hit@20", "ndcg@20"):
            assert model_metrics[key] > reference[key], (baseline.name, key, model_metrics[key], reference[key])
    assert result.valid_metrics["ndcg@20"] > 0 and result.best_epoch >= 1
    assert np.isfinite(result.train_examples_per_s)
