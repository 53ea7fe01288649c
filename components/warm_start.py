"""What the retrieval and ranking warm starts share: the weights file, id rows carried by id, the architecture
check, and the last blessed model that can seed a stage (components.registry).

A warm-startable artifact writes WEIGHTS: its id tables (`table_<name>`) with the ids of their rows (`ids_<name>`),
and its other weights in model order (`other_NNNN`). A warm start builds today's model on today's vocabulary and
copies every row whose id the parent knew, wherever today's vocabulary puts it; a new id's row starts at zero.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

WEIGHTS = "weights.npz"
WARM_START = "warm_start.json"  # in a warm-started artifact: the parent and what was carried

log = logging.getLogger(__name__)


class WarmStartError(ValueError):
    """The parent model cannot seed this one (another architecture, no weights file)."""


def load_arrays(artifact_dir: str | Path) -> dict[str, np.ndarray]:
    """The WEIGHTS arrays of an artifact; WarmStartError when it has none (it predates warm starts)."""
    path = Path(artifact_dir, WEIGHTS)
    if not path.exists():
        raise WarmStartError(f"{artifact_dir} has no {WEIGHTS}: the parent model predates warm starts")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def save_arrays(directory: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Writes `arrays` as the artifact's WEIGHTS."""
    with open(Path(directory, WEIGHTS), "wb") as handle:
        np.savez(handle, **arrays)


def others_arrays(weights: Sequence) -> dict[str, np.ndarray]:
    """`other_NNNN` entries of WEIGHTS for the weights that are not id tables, in model order."""
    return {f"other_{k:04d}": weight.numpy() for k, weight in enumerate(weights)}


def architecture_change(parent: dict, current: dict, fields: Sequence[str]) -> str | None:
    """Why a parent cannot seed this run: "has another <field> (<parent's>, this run's <current>)" for the first
    field that shapes the weights on which the two configurations differ, or None when they agree."""
    for name in fields:
        if parent.get(name) != current.get(name):
            return f"has another {name} ({parent.get(name)!r}, this run's {current.get(name)!r})"
    return None


def check_architecture(parent: dict, current: dict, fields: Sequence[str]) -> None:
    """Refuses a parent whose configuration differs on a field that shapes the weights, naming the field."""
    change = architecture_change(parent, current, fields)
    if change:
        raise WarmStartError(f"warm start: the parent {change}")


def carry_rows(target, source: np.ndarray, target_ids, source_ids, reserved: int) -> int:
    """Assigns `target` (a variable) the rows of `source` by id (the first `reserved` rows by position); other rows
    start at zero. Returns the rows carried by id."""
    values = np.zeros(target.shape, np.float32)
    values[:reserved] = source[:reserved]
    where = {str(i): k for k, i in enumerate(source_ids)}
    carried = 0
    for row, ident in enumerate(target_ids):
        if row < reserved:
            continue
        k = where.get(str(ident))
        if k is not None and k >= reserved:
            values[row] = source[k]
            carried += 1
    target.assign(values)
    return carried


def assign_others(weights: Sequence, arrays: dict[str, np.ndarray], what: str) -> None:
    """Copies the `other_NNNN` arrays into `weights` (same order); WarmStartError unless the layouts agree."""
    saved = sorted(k for k in arrays if k.startswith("other_"))
    if len(saved) != len(weights) or any(arrays[k].shape != tuple(w.shape) for k, w in zip(saved, weights)):
        raise WarmStartError(f"warm start: the parent's {what} weights do not match this model's layout")
    for key, weight in zip(saved, weights):
        weight.assign(arrays[key])


def parent_of(
    registry_dir: str | Path | None, part: str, usable: Callable[[Path], str | None] | None = None
) -> tuple[str | None, str]:
    """(artifact, version) of the last blessed model's `part` ("retrieval" or "ranking") when it can seed a warm
    start, else (None, "") with a warning saying why the run trains from scratch. `usable(artifact)` returns a
    reason to refuse it (another model type, say), or None."""
    from components import registry

    blessed = registry.last_blessed(registry_dir) if registry_dir else None
    if blessed is None:
        log.warning(
            "warm start (%s): no last blessed model%s; training from scratch",
            part,
            "" if registry_dir else " (no registry)",
        )
        return None, ""
    artifact = blessed.path / part
    if not Path(artifact, WEIGHTS).exists():
        log.warning(
            "warm start: blessed %s's %s has no %s (older export); training from scratch",
            blessed.version,
            part,
            WEIGHTS,
        )
        return None, ""
    reason = usable(artifact) if usable else None
    if reason:
        log.warning("warm start: blessed %s's %s %s; training from scratch", blessed.version, part, reason)
        return None, ""
    return str(artifact), blessed.version
