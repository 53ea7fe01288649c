"""SEEDS=n: a model's entry holds the median of each metric, plus `per_seed` (the values) and `spread`
(max minus min), as the bench contract (docs/architecture.md) says."""

from __future__ import annotations

from components.metrics import merge_seeds

__all__ = ["deep_update", "merge_seeds"]  # merge_seeds lives in components.metrics: ranking_bench merges its seeds too


def deep_update(target: dict, update: dict) -> dict:
    """Merges `update` into `target` key by key (nested dicts merged, other values replaced)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target
