"""The tf.distribute strategy the trainers build and compile their models under.

`RECSYS_DISTRIBUTION=mirrored` (set by components/cloud/resources.py on a trainer task that has GPUs) gives
MirroredStrategy: one replica per visible GPU of the machine, variables mirrored, gradients all-reduced; on a
machine without a GPU it is one replica on the CPU, which is how the tests run this path. Anything else is
TensorFlow's default strategy, the single-device path every run took before. The strategy is the machine's
property, not the model's, so it comes with the machine's settings rather than the stage's parameters.
"""

from __future__ import annotations

import functools
import os

ENV = "RECSYS_DISTRIBUTION"
STRATEGIES = ("default", "mirrored")


def strategy_name() -> str:
    """The strategy RECSYS_DISTRIBUTION asks for ("default" when unset); an unknown name is refused."""
    name = os.environ.get(ENV, "") or "default"
    if name not in STRATEGIES:
        raise ValueError(f"{ENV}={name!r}: expected one of {STRATEGIES}")
    return name


def strategy():
    """MirroredStrategy over the machine's GPUs (the CPU when there is none) when asked, else the default. One
    MirroredStrategy a process: a model and its optimizer, or the model a refit copies from, share its devices."""
    import tensorflow as tf

    if strategy_name() == "mirrored":
        return _mirrored()
    return tf.distribute.get_strategy()


@functools.cache
def _mirrored():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()
