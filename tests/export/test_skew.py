"""Training-serving skew by injection: export and server refuse a model trained on another item vocabulary."""

import numpy as np
import pytest

from components import schema
from components.serving.models import ServingModel, check_layout


def _model(ids):
    return ServingModel(retriever=None, ranker=None, item_ids=np.array(["", "[OOV]", *ids], dtype=object), version="v7")


def test_same_layout_passes_and_a_reordered_or_resized_vocabulary_is_refused():
    features = np.array(["", "", "a", "b", "c"], dtype=object)
    check_layout(_model(["a", "b", "c"]), features, "export")
    with pytest.raises(schema.SchemaError, match=r"skew: model v7 .*index 2 is 'b' in the model, 'a' in export's"):
        check_layout(_model(["b", "a", "c"]), features, "export")
    with pytest.raises(schema.SchemaError, match="4 items in the model's vocabulary, 3 in the one the server reads"):
        check_layout(_model(["a", "b", "c", "d"]), features, "the server")
