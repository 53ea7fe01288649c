"""The loaded serving model: both A/B arms, the stored histories and the catalogue, ready to answer instances.

A request is scored as the export scores a user (components.export.batch.score_users): the stored history
(plus what the request adds: its events' types and times reach the ranker, merged into steps as the features job
merges a user's events), the request at the stored lists' time as_of or at its latest event, every item the user
had masked, the arm's model reached through item ids when its
vocabulary is older, and funnel.run_funnel with the export's depth and list length. So for the same model and
history the served list is the exported one, item for item.

A Predictor is built whole (models loaded, warmed) before the server swaps it in, and never changes after.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from components import ab, schema
from components.export import batch
from components.features.reader import pad_left
from components.features.sequences import event_flag
from components.serving import bundle as bundles
from components.serving import funnel
from components.serving.instances import Instance
from components.serving.models import ServingModel, check_layout, index_map, load_serving_model, same_vocabulary

WARM_BATCHES = (1, 8, 32)


@dataclasses.dataclass(frozen=True)
class _Arm:
    model: ServingModel
    to_model: np.ndarray | None  # today's item index -> the model's; None when the vocabularies are the same
    available: np.ndarray  # by the model's item index
    popularity: np.ndarray


@dataclasses.dataclass(frozen=True)
class _History:
    items: np.ndarray  # today's item indices, oldest first, at most max_len
    types: np.ndarray  # aligned with items: event-type flags (0: unknown)
    gaps: np.ndarray  # aligned with items: seconds since the step before (NO_GAP: none or unknown)
    request_gap: int  # seconds from the last step to the request (NO_GAP: unknown)
    seen: np.ndarray  # every item to leave out: what the user had, and the request's exclude
    ignored: int  # request items unknown to today's catalogue


class Predictor:
    def __init__(self, serving: bundles.ServingBundle, load_model: Callable[..., ServingModel] = load_serving_model):
        self.config = serving.config
        self.inputs = serving.inputs
        self._user_row = {user: row for row, user in enumerate(self.inputs.user_ids)}
        self._item_index = {item: i for i, item in enumerate(self.inputs.item_ids) if i >= schema.NUM_RESERVED}
        treatment_model = load_model(*serving.model_dirs(bundles.TREATMENT), self.config.model_version)
        check_layout(treatment_model, self.inputs.item_ids, "the server")
        treatment = self._arm(treatment_model)
        control_dirs = serving.model_dirs(bundles.CONTROL)
        control = self._arm(load_model(*control_dirs, self.config.control_version)) if control_dirs else treatment
        self._arms = {ab.TREATMENT: treatment, ab.CONTROL: control}

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        return cls(bundles.read_serving_model(path))

    @property
    def version(self) -> str:
        return self.config.model_version

    def predict(self, instances: Sequence[Instance]) -> list[dict]:
        """One prediction per instance, in order: {"items", "scores", "source", "variant", "model_version",
        "ignored_items"}. Instances served by the same model at the same depth are scored in one funnel call: both
        variants together when the control arm is the treatment model (no earlier blessed model)."""
        config = self.config
        histories = [self._history(instance) for instance in instances]
        lengths = [instance.k or config.top_k for instance in instances]
        variants = [ab.assign(instance.user_id, config.experiment, config.treatment_ratio) for instance in instances]
        groups = collections.defaultdict(list)
        for i, variant in enumerate(variants):
            # Lists shorter than the export's are its prefixes: the funnel always runs at top_k or more.
            groups[id(self._arms[variant]), max(lengths[i], config.top_k)].append(i)
        predictions: list[dict] = [{}] * len(instances)
        for (_, depth), members in groups.items():
            arm = self._arms[variants[members[0]]]
            result = self._funnel(arm, [histories[i] for i in members], depth)
            sources = result.sources
            for row, i in enumerate(members):
                items, scores = result.items[row, : lengths[i]], result.scores[row, : lengths[i]]
                shown = items >= schema.NUM_RESERVED
                predictions[i] = {
                    "items": arm.model.item_ids[items[shown]].tolist(),
                    "scores": scores[shown].astype(float).tolist(),
                    "source": str(sources[row]),
                    "variant": variants[i],
                    "model_version": arm.model.version,
                    "ignored_items": histories[i].ignored,
                }
        return predictions

    def warm(self, batch_sizes: Sequence[int] = WARM_BATCHES) -> None:
        """Runs both arms at a few batch sizes on stored users, so the first requests do not pay for first calls."""
        rows = np.flatnonzero((self.inputs.hist_items != schema.PAD_INDEX).any(axis=1))
        if not len(rows):
            rows = np.arange(min(len(self.inputs.user_ids), 1))
        for arm in {id(a): a for a in self._arms.values()}.values():
            for size in batch_sizes:
                users = self.inputs.user_ids[rows[np.arange(size) % len(rows)]]
                self._funnel(arm, [self._history(Instance(user_id=u)) for u in users], self.config.top_k)

    def _history(self, instance: Instance) -> _History:
        row = self._user_row.get(instance.user_id)
        inputs, no_gap = self.inputs, schema.NO_GAP
        if row is None:
            stored, types, gaps, seen = (np.empty(0, np.int64),) * 4
            last_ts = None
        else:
            real = inputs.hist_items[row] != schema.PAD_INDEX
            stored, types, gaps = (
                inputs.hist_items[row][real],
                inputs.hist_types[row][real],
                inputs.hist_gaps[row][real],
            )
            seen = inputs.seen_items[row]
            last_ts = None if inputs.last_ts[row] == no_gap else int(inputs.last_ts[row])
        known = [i for i, item in enumerate(instance.recent) if item in self._item_index]
        recent = [self._item_index[instance.recent[i]] for i in known]
        exclude = [self._item_index[item] for item in instance.exclude if item in self._item_index]
        if recent or exclude:
            seen = np.concatenate([seen, np.asarray(recent + exclude, np.int64)])
        request_ts = self.config.as_of
        if instance.recent_events:
            events = [
                (
                    self._item_index[instance.recent[i]],
                    event_flag(instance.recent_events[i][0]),
                    instance.recent_events[i][1],
                )
                for i in known
            ]
            steps = funnel.append_events(stored, types, gaps, last_ts, events)
            last_ts = steps[3]
            if events:
                request_ts = max(request_ts, events[-1][2])
        else:  # history items: their types and times are unknown, and so the request's gap once there are any
            steps = (list(stored) + recent, list(types) + [0] * len(recent), list(gaps) + [no_gap] * len(recent))
            last_ts = None if recent else last_ts
        cut = slice(-self.config.max_len, None)
        return _History(
            items=np.asarray(steps[0], np.int64)[cut],
            types=np.asarray(steps[1], np.int64)[cut],
            gaps=np.asarray(steps[2], np.int64)[cut],
            request_gap=no_gap if last_ts is None else max(request_ts - last_ts, 0),
            seen=seen,
            ignored=len(instance.recent) - len(recent),
        )

    def _funnel(self, arm: _Arm, histories: list[_History], depth: int) -> funnel.FunnelResult:
        hist = pad_left([h.items for h in histories], self.config.max_len)
        behaviour = funnel.Behaviour(
            pad_left([h.types for h in histories], self.config.max_len),
            pad_left([h.gaps for h in histories], self.config.max_len, fill=schema.NO_GAP),
            np.asarray([h.request_gap for h in histories], np.int64),
        )
        seen = [h.seen for h in histories]
        if arm.to_model is not None:
            hist, seen = arm.to_model[hist], [arm.to_model[s] for s in seen]
        candidates_n = min(self.config.candidates_n, arm.model.num_items)
        return funnel.run_funnel(
            arm.model.retriever,
            arm.model.ranker,
            hist,
            seen,
            candidates_n=candidates_n,
            top_k=min(depth, candidates_n),
            available=arm.available,
            popularity=arm.popularity,
            behaviour=behaviour,
        )

    def _arm(self, model: ServingModel) -> _Arm:
        """The model with today's catalogue in its index space, computed once rather than per request."""
        to_model = (
            None
            if same_vocabulary(self.inputs.item_ids, model.item_ids)
            else index_map(self.inputs.item_ids, model.item_ids)
        )
        available, popularity = batch.catalogue_in_model_space(model, self.inputs)
        return _Arm(model=model, to_model=to_model, available=available, popularity=popularity)
