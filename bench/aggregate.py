"""SEEDS=n: a model's entry holds the median of each metric, plus `per_seed` (the values) and `spread`
(max minus min), as the bench contract (docs/architecture.md) says."""

from __future__ import annotations

import numbers
import statistics


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def merge_seeds(runs: list[dict]) -> dict:
    """Merges the per-seed results of one stage, recursively.

    A dict with numeric values gets the medians in place of the values, and `per_seed` / `spread`
    for those keys; nested dicts are merged the same way; other values are kept from the first seed.
    With one seed the result is the run itself.
    """
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    out, per_seed, spread = {}, {}, {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if _is_number(value) and all(_is_number(v) for v in values):
            out[key] = statistics.median(values)
            per_seed[key] = values
            spread[key] = max(values) - min(values)
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            out[key] = merge_seeds(values)
        else:
            out[key] = value
    if per_seed:
        out["per_seed"] = per_seed
        out["spread"] = spread
    return out


def deep_update(target: dict, update: dict) -> dict:
    """Merges `update` into `target` key by key (nested dicts merged, other values replaced)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_update(target[key], value)
        else:
            target[key] = value
    return target
