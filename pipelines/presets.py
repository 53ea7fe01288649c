"""The pipeline parameters a shop of a synthetic preset's size sets: the one table `make bench` (bench/run.py) and
`make pipeline-run` (pipelines/run.py) both read when DATA or SHOP names the preset.

A shop with hundreds of thousands of users does not train and evaluate as the default shop does: every epoch costs
its train examples, full-catalogue scoring costs users x items, and the ranker's hard negatives cost train rows x
items. The values below are what such a shop sets to go through the whole DAG in a night (the large preset, 360k
users, 50k items, 10.25M events: within 2 hours on 2 cores); PARAMS (`--param NAME=VALUE`) overrides any of them, and
the bench JSON (`settings`) and each run's metadata record what ran. The README's table is generated from here
(python -m pipelines.parameters_doc).
"""

from __future__ import annotations

from typing import Any

# preset -> pipeline parameter -> (value, why); a preset that is not here runs with the DAG's defaults.
PRESET_PARAMETERS: dict[str, dict[str, tuple[Any, str]]] = {
    "large": {
        "max_examples_per_user": (
            3,
            "each user's 3 latest train targets (their histories still reach max_len): ~1M train examples instead "
            "of 7.07M (the medium shop at 4: 112,977 of 653,339); both trainers' epochs and the ranker's hard "
            "negatives (train rows x items) cost train examples",
        ),
        "retrieval_epochs": (
            3,
            "an epoch holds ~1M examples, ~0.3 ms CPU each (medium, capped at 4: 113k an epoch, valid NDCG@20 0.378 "
            "after the first, 0.393 after the second); patience 2 still stops earlier",
        ),
        "retrieval_refit_epochs": (
            1,
            "one pass over valid's 346k new rows plus the replay share of train still trains the served model "
            "through each user's last event",
        ),
        "retrieval_valid_max_users": (
            20_000,
            "each retrieval epoch's full-catalogue valid pass and each ranker's fusion-weight choice (the funnel on "
            "valid: retrieval, then the ranker on 200 candidates a user) cost users x items: 20k of 346k users",
        ),
        "ranking_epochs": (1, "DIEN and DIN each train one epoch over ~1M steps with their lists; 3 cost 3x"),
        "ranking_train_input": (
            "stream",
            "~960k ranking train rows with their lists are just under auto's 1M: in memory they cost ~9 GB (the medium "
            "shop's 653k: 6.4 GB to build, 3.1 GB to train), streamed one bucket of ~131k at a time",
        ),
        "ranking_refit_epochs": (
            1,
            "one pass over valid's 346k steps plus the replay share of train (~0.5 of a train epoch) still trains "
            "the served ranker through each user's last step",
        ),
        "candidates_n": (
            100,
            "the funnel's depth: evaluation scores and export re-ranks at most 100 candidates a user (the export "
            "depth is chosen up to it), the ranker's cost per user",
        ),
        "evaluation_max_users": (
            20_000,
            "full-catalogue scoring of 2 funnels and 2 baselines costs users x items: 20k hashed test users (the "
            "same every run); export still serves all 346k",
        ),
    },
}


def parameters(preset: str) -> dict[str, Any]:
    """The pipeline parameter overrides of `preset` ({} for a preset, or a source, that has none)."""
    return {name: value for name, (value, _) in PRESET_PARAMETERS.get(preset, {}).items()}


def with_preset(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The preset's overrides under the ones `given` (PARAMS): what a run of that preset sets."""
    return {**parameters(preset), **given}


def synthetic_preset(source: str) -> str:
    """The preset of a synthetic source ("synthetic:large" -> "large"); "" for any other source."""
    kind, _, name = source.partition(":")
    return name if kind == "synthetic" else ""


def describe(preset: str, applied: dict[str, Any]) -> str:
    """One line: the parameters a run of `preset` sets, each marked when the run's own value replaced the preset's."""
    own = parameters(preset)
    parts = [f"{name}={value}" + ("" if own.get(name) == value else " (given)") for name, value in applied.items()]
    return ", ".join(parts) + " (pipelines/presets.py; PARAMS overrides)"
