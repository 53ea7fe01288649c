"""Item and category embeddings, concatenated: the input representation shared by DIN, DIEN and the reference."""

from __future__ import annotations

import tensorflow as tf


class ItemCategoryEmbedding(tf.keras.layers.Layer):
    """(item index, category index) -> [item vector, category vector]; index 0 (padding) and 1 (OOV) are rows too."""

    def __init__(self, num_items: int, num_categories: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.num_categories, self.dim = num_items, num_categories, dim
        self.items = tf.keras.layers.Embedding(num_items, dim, name="items")
        self.categories = tf.keras.layers.Embedding(num_categories, dim, name="categories")

    @property
    def output_dim(self) -> int:
        """The size of one step's vector: an item vector and a category vector side by side."""
        return 2 * self.dim

    def call(self, inputs):
        """(items, categories) int [...] -> [..., 2 * dim], item vector then category vector."""
        items, categories = inputs
        return tf.concat([self.items(items), self.categories(categories)], axis=-1)

    def get_config(self):
        """The layer's settings, so Keras can rebuild it."""
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "num_categories": self.num_categories,
            "dim": self.dim,
        }
