"""Stage logic of the recommender pipeline, one sub-package per stage.

TensorFlow Recommenders needs the Keras 2 API (tf-keras). The switch must be set before
TensorFlow is first imported, and every stage imports this package first, so this is the one
place that sets it.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
