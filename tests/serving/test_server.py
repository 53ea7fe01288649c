"""The prediction server over real HTTP on loopback (uvicorn on a socket, http.client, no mocked client): Vertex AI's
contract (routes, variables, body shapes), every bad input, the fallbacks, the model swap following the registry's
LATEST.json, and a health route that stays 503 until a model is loaded and warmed."""

import datetime as dt
import http.client
import json
import logging
import re
import threading
import time
import types

import numpy as np
import pytest

from components import ab
from components.serving import bundle, server
from components.serving.server import ModelHolder, Settings
from components.serving.source import ModelSource

from .conftest import CANDIDATES_N, EXPERIMENT, RATIO, TOP_K, LiveServer, publish_version

MAX_INSTANCES, MAX_BODY = 8, 4096


@pytest.fixture(scope="module")
def registry(tiny_shop, tmp_path_factory):
    """A local registry whose LATEST is the tiny shop's serving model, as the register step leaves it."""
    root = tmp_path_factory.mktemp("registry")
    bundle.publish(tiny_shop.serving_model, root, "v1-dien")
    return root / bundle.SERVING


@pytest.fixture(scope="module")
def live(registry):
    """The server as `make serve` runs it: the real load (snapshot, both arms' SavedModels) and warm-up."""
    settings = Settings(
        storage_uri=str(registry), reload_interval_s=0, max_instances=MAX_INSTANCES, max_body_bytes=MAX_BODY
    )
    with LiveServer(settings) as running:
        running.wait_ready()
        yield running


def test_contract_routes_and_shapes(live, exported_lists):
    user = min(exported_lists)
    status, health = live.request("GET", "/health")
    assert status == 200 and health == {"status": "ready", "model_version": "v1-dien"}
    status, body = live.predict({"instances": [{"user_id": user}, {"user_id": user, "k": 2}]})
    assert status == 200 and list(body) == ["predictions"] and len(body["predictions"]) == 2
    first = body["predictions"][0]
    assert set(first) == {"items", "scores", "source", "variant", "model_version", "ignored_items"}
    assert first["items"] == exported_lists[user]["items"] and len(first["items"]) == len(first["scores"]) == TOP_K
    assert body["predictions"][1]["items"] == first["items"][:2]
    assert live.request("GET", "/predict")[0] == 405
    assert live.request("POST", "/health")[0] == 405


def test_vertex_parameters_field_is_accepted(live, exported_lists):
    user = sorted(exported_lists)[1]
    status, body = live.predict({"instances": [{"user_id": user}], "parameters": {}})
    assert status == 200 and body["predictions"][0]["items"] == exported_lists[user]["items"]


def test_each_user_gets_the_exported_list_arm_and_version(live, exported_lists):
    """One request per user for a sample of both arms: items, source, variant and model version as exported."""
    by_variant = {}
    for user in sorted(exported_lists):
        by_variant.setdefault(exported_lists[user]["variant"], []).append(user)
    assert set(by_variant) == {"treatment", "control"}
    for users in by_variant.values():
        for user in users[:4]:
            status, body = live.predict({"instances": [{"user_id": user}]})
            got, want = body["predictions"][0], exported_lists[user]
            assert status == 200
            assert got["items"] == want["items"], user
            assert got["scores"] == pytest.approx(want["scores"], rel=1e-5, abs=1e-6), user
            assert (got["source"], got["variant"], got["model_version"]) == (
                want["source"],
                want["variant"],
                want["model_version"],
            )


def test_fallbacks_are_answers_not_errors(live, exported_lists, predictor):
    user = sorted(exported_lists)[2]
    exported = exported_lists[user]["items"]
    known = [item for item in predictor.inputs.item_ids[2:] if item not in exported][:2]
    instances = [
        {"user_id": "nobody-knows-me"},  # unknown user, no history: popularity
        {"user_id": "nobody-knows-me-either", "history": known},  # unknown user with items: the funnel on them
        {"user_id": user, "history": ["no-such-item", "nor-this"]},  # unknown items: ignored and counted
        {"user_id": user, "history": []},  # empty history: the stored one
        {"user_id": user, "exclude": exported[:2]},  # exclude: left out, the rest moves up
        {"user_id": user, "history": known[:1]},  # a new item: appended, never recommended
    ]
    status, body = live.predict({"instances": instances})
    assert status == 200
    unknown, unknown_with_items, ignored, empty, excluded, appended = body["predictions"]
    assert unknown["source"] == "popularity_fallback" and len(unknown["items"]) == TOP_K
    assert unknown_with_items["source"] == "funnel" and not set(known) & set(unknown_with_items["items"])
    assert ignored["items"] == exported and ignored["ignored_items"] == 2
    assert empty["items"] == exported and empty["ignored_items"] == 0
    assert len(excluded["items"]) == TOP_K and not set(exported[:2]) & set(excluded["items"])
    kept = [item for item in excluded["items"] if item in exported]
    assert kept == [item for item in exported if item in kept], "the other items keep their order"
    assert known[0] not in appended["items"] and len(appended["items"]) == TOP_K


def test_events_reach_the_ranker_with_their_types_and_gaps(live, exported_lists, predictor):
    """Events are the history they order, merged into steps as the features job merges them, with each step's
    event types and gap and the request at the latest event: the served list is the funnel's on exactly that."""
    from components import schema
    from components.serving import funnel

    user = sorted(exported_lists)[3]
    row = list(predictor.inputs.user_ids).index(user)
    stored = predictor.inputs.hist_items[row]
    last_item, last_ts = int(stored[-1]), int(predictor.inputs.last_ts[row])
    items = [item for item in predictor.inputs.item_ids[2:5] if item != predictor.inputs.item_ids[last_item]][:2]
    at = dt.datetime.fromtimestamp(last_ts + 3_600, dt.timezone.utc)
    events = [
        {"item_id": items[1], "event_type": "cart", "event_ts": (at + dt.timedelta(seconds=60)).isoformat()},
        {"item_id": items[0], "event_type": "view", "event_ts": at.isoformat()},
        {"item_id": items[1], "event_type": "purchase", "event_ts": (at + dt.timedelta(seconds=90)).isoformat()},
    ]
    status, body = live.predict({"instances": [{"user_id": user, "events": events}]})
    assert status == 200
    got = body["predictions"][0]
    index = {item: i for i, item in enumerate(predictor.inputs.item_ids)}
    view, cart, purchase = (1 << schema.EVENT_TYPES.index(t) for t in ("view", "cart", "purchase"))
    real = stored != schema.PAD_INDEX
    hist = np.r_[stored[real], index[items[0]], index[items[1]]][-predictor.config.max_len :][None]
    step_types = np.r_[predictor.inputs.hist_types[row][real], view, cart | purchase][-hist.shape[1] :][None]
    gaps = np.r_[predictor.inputs.hist_gaps[row][real], 3_600, 60][-hist.shape[1] :][None]
    request_gap = max(predictor.config.as_of, last_ts + 3_690) - (last_ts + 3_660)
    arm = predictor._arms[ab.assign(user, predictor.config.experiment, predictor.config.treatment_ratio)]
    seen = np.concatenate([predictor.inputs.seen_items[row], hist[0, -2:]])
    expected = funnel.run_funnel(
        arm.model.retriever,
        arm.model.ranker,
        funnel_pad(hist, predictor.config.max_len),
        [seen],
        candidates_n=predictor.config.candidates_n,
        top_k=predictor.config.top_k,
        available=arm.available,
        popularity=arm.popularity,
        behaviour=funnel.Behaviour(
            funnel_pad(step_types, predictor.config.max_len, 0),
            funnel_pad(gaps, predictor.config.max_len, schema.NO_GAP),
            np.array([request_gap]),
        ),
    )
    assert got["items"] == list(arm.model.item_ids[expected.items[0][expected.items[0] >= 2]])


def funnel_pad(matrix, width, fill=0):
    """A [1, L] row left-padded to width."""
    return np.pad(matrix, ((0, 0), (width - matrix.shape[1], 0)), constant_values=fill)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "body: not valid JSON"),
        (b"[]", "body: must be a JSON object"),
        (b"{}", "instances: missing"),
        (b'{"instances": []}', "instances: empty"),
        (b'{"instances": [{"user": "u"}]}', "instances[0].user: unknown field"),
        (b'{"instances": [{"history": ["i"]}]}', "instances[0].user_id: missing"),
        (b'{"instances": [{"user_id": 12}]}', "instances[0].user_id: must be a non-empty string, got number 12"),
        (b'{"instances": [{"user_id": "u", "history": "i1"}]}', "instances[0].history: must be a list"),
        (b'{"instances": [{"user_id": "u", "k": 0}]}', f"instances[0].k: must be an integer from 1 to {CANDIDATES_N}"),
        (
            json.dumps({"instances": [{"user_id": "u", "k": CANDIDATES_N + 1}]}).encode(),
            f"instances[0].k: must be an integer from 1 to {CANDIDATES_N} (the export depth), got {CANDIDATES_N + 1}",
        ),
        (
            b'{"instances": [{"user_id": "u", "events": [{"item_id": "i", "event_type": "view"}]}]}',
            "instances[0].events[0].event_ts: missing",
        ),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(live, body, message):
    status, answer = live.request("POST", "/predict", body)
    assert status == 400 and list(answer) == ["error"]
    assert answer["error"].startswith(message) and "\n" not in answer["error"]


def test_size_limits_are_413(live):
    too_many = {"instances": [{"user_id": f"u{i}"} for i in range(MAX_INSTANCES + 1)]}
    status, answer = live.predict(too_many)
    assert status == 413 and answer["error"] == f"instances: 9 instances, at most {MAX_INSTANCES} per request"

    big = json.dumps({"instances": [{"user_id": "u", "history": ["i"] * 2000}]}).encode()
    status, answer = live.request("POST", "/predict", big)
    assert status == 413 and answer["error"].startswith(f"body: {len(big):,} bytes, more than the limit of 4,096")

    # Without a Content-Length (chunked), the limit holds while reading.
    connection = http.client.HTTPConnection("127.0.0.1", live.port, timeout=60)
    try:
        connection.request("POST", "/predict", iter([big[:3000], big[3000:]]), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "body: more than the limit of 4,096 bytes"
    finally:
        connection.close()


def test_the_server_keeps_serving_after_refusals(live, exported_lists):
    for body in (b"\xff", b'{"instances": [1]}', b"null"):
        assert live.request("POST", "/predict", body)[0] == 400
    user = min(exported_lists)
    assert (
        live.predict({"instances": [{"user_id": user}]})[1]["predictions"][0]["items"] == exported_lists[user]["items"]
    )
    assert live.request("GET", "/health")[0] == 200


def test_routes_and_port_come_from_vertex_variables(registry, reuse_models):
    env = {
        "AIP_HTTP_PORT": "9123",
        "AIP_HEALTH_ROUTE": "/v1/ready",
        "AIP_PREDICT_ROUTE": "/v1/models/shop:predict",
        "AIP_STORAGE_URI": str(registry),
    }
    settings = Settings.from_env(env, reload_interval_s=0)
    assert (settings.port, settings.storage_uri, settings.host) == (9123, str(registry), "0.0.0.0")
    defaults = Settings.from_env({})
    assert (defaults.port, defaults.health_route, defaults.predict_route) == (8080, "/health", "/predict")
    assert Settings.from_env(env, port=7000).port == 7000, "a command-line value wins over the variable"
    with LiveServer(settings, ModelHolder(ModelSource(settings.storage_uri), load=reuse_models)) as running:
        running.wait_ready("/v1/ready")
        status, body = running.predict({"instances": [{"user_id": "someone"}]}, path="/v1/models/shop:predict")
        assert status == 200 and body["predictions"][0]["model_version"] in ("v1-dien", "v0-din")
        assert running.request("GET", "/health")[0] == 404
        assert running.request("POST", "/predict", b'{"instances": [{"user_id": "u"}]}')[0] == 404


def test_the_cli_refuses_to_start_without_a_model(monkeypatch, capsys):
    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    with pytest.raises(SystemExit) as exited:
        server.main([])
    assert exited.value.code == 2 and "no model: set AIP_STORAGE_URI or --model" in capsys.readouterr().err


@pytest.mark.slow
def test_a_new_latest_is_swapped_in_whole_and_a_broken_one_refused(tiny_shop, reuse_models, tmp_path):
    """The server follows the registry's LATEST.json: a new version is loaded and warmed beside serving and then
    answers every request; requests sent throughout the swap all succeed, each from one whole model; a broken
    new version is refused and the served one stays."""
    registry = tmp_path / "registry"
    publish_version(tiny_shop, registry, "v1", tmp_path / "scratch")
    serving = registry / bundle.SERVING
    settings = Settings(storage_uri=str(serving), reload_interval_s=0.2)
    holder = ModelHolder(ModelSource(str(serving), cache_dir=tmp_path / "cache"), load=reuse_models)
    users = [f"user-{i}" for i in range(40)]  # unknown users (popularity lists), three of each arm
    arms = {variant: [u for u in users if ab.assign(u, EXPERIMENT, RATIO) == variant][:3] for variant in ab.VARIANTS}
    body = {"instances": [{"user_id": u} for u in arms[ab.TREATMENT] + arms[ab.CONTROL]]}
    with LiveServer(settings, holder) as running:
        running.wait_ready()
        assert running.request("GET", "/health")[1]["model_version"] == "v1"
        seen, failures, stop = set(), [], threading.Event()

        def hammer():
            while not stop.is_set():
                status, answer = running.predict(body)
                if status != 200:
                    failures.append((status, answer))
                    continue
                versions = {p["model_version"] for p in answer["predictions"] if p["variant"] == "treatment"}
                seen.add(frozenset(versions))

        client = threading.Thread(target=hammer)
        client.start()
        try:
            time.sleep(0.3)
            publish_version(tiny_shop, registry, "v2", tmp_path / "scratch")
            _wait_for_version(running, "v2")
            time.sleep(0.3)
        finally:
            stop.set()
            client.join(timeout=60)
        assert not failures
        assert seen >= {frozenset({"v1"}), frozenset({"v2"})} and all(len(v) == 1 for v in seen), seen
        assert len(list((tmp_path / "cache").iterdir())) == 1, "the replaced model's snapshot is removed"

        broken = serving / "v3"
        broken.mkdir()
        (broken / bundle.CONFIG).write_text(json.dumps({"model_version": "v3"}))  # no settings, no models
        (serving / bundle.LATEST).write_text(json.dumps({"version": "v3"}))
        deadline = time.monotonic() + 30
        while holder.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert holder.error and holder.current.version == "v2"
        status, health = running.request("GET", "/health")
        assert status == 200 and health["model_version"] == "v2"
        assert running.predict(body)[0] == 200


def _wait_for_version(running, version, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.request("GET", "/health")[1].get("model_version") == version:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the server did not switch to {version}")


class _FakePredictor:
    """Answers instantly (one item per instance, named after its user); user "boom" raises; counts calls."""

    version = "fake-1"
    config = types.SimpleNamespace(candidates_n=5)

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.calls: list[int] = []

    def warm(self):
        pass

    def predict(self, instances):
        self.calls.append(len(instances))
        time.sleep(self.delay_s)
        if any(instance.user_id == "boom" for instance in instances):
            raise RuntimeError("the ranker fell over")
        return [
            {"items": [f"for-{i.user_id}"], "scores": [1.0], "source": "funnel", "variant": "treatment"}
            for i in instances
        ]


class _FixedSource:
    uri = "memory://fake"

    def current_version(self):
        return _FakePredictor.version

    def fetch(self, version):
        return None

    def close(self):
        pass


def test_health_is_503_until_the_model_is_loaded_and_warmed():
    release, predictor = threading.Event(), _FakePredictor()

    def slow_load(snapshot):
        release.wait(30)
        return predictor

    holder = ModelHolder(_FixedSource(), load=slow_load)
    with LiveServer(Settings(storage_uri="memory://fake", reload_interval_s=0), holder) as running:
        status, health = running.request("GET", "/health")
        assert status == 503 and health["status"] == "loading"
        status, answer = running.predict({"instances": [{"user_id": "u"}]})
        assert status == 503 and answer["error"].startswith("model: not loaded yet; /health answers 200")
        release.set()
        running.wait_ready(timeout_s=30)
        assert running.predict({"instances": [{"user_id": "u"}]})[1]["predictions"][0]["items"] == ["for-u"]


def test_a_failing_prediction_is_a_500_and_the_server_goes_on():
    holder = ModelHolder(_FixedSource(), load=lambda snapshot: _FakePredictor())
    with LiveServer(Settings(storage_uri="memory://fake", reload_interval_s=0), holder) as running:
        running.wait_ready(timeout_s=30)
        status, answer = running.predict({"instances": [{"user_id": "boom"}]})
        assert status == 500 and answer["error"] == "internal error: RuntimeError: the ranker fell over"
        assert running.predict({"instances": [{"user_id": "ok"}]})[0] == 200


def test_concurrent_requests_are_scored_together_each_getting_its_own_answer():
    predictor = _FakePredictor(delay_s=0.2)
    holder = ModelHolder(_FixedSource(), load=lambda snapshot: predictor)
    with LiveServer(Settings(storage_uri="memory://fake", reload_interval_s=0), holder) as running:
        running.wait_ready(timeout_s=30)
        predictor.calls.clear()
        answers = {}

        def client(i):
            answers[i] = running.predict({"instances": [{"user_id": f"u{i}"}, {"user_id": f"u{i}b"}]})

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for i in range(8):
            status, body = answers[i]
            assert status == 200 and [p["items"] for p in body["predictions"]] == [[f"for-u{i}"], [f"for-u{i}b"]]
        assert sum(predictor.calls) == 16 and len(predictor.calls) < 8, predictor.calls


def test_debug_logs_a_line_per_request_and_info_a_summary_per_interval(caplog):
    holder = ModelHolder(_FixedSource(), load=lambda snapshot: _FakePredictor())
    settings = Settings(storage_uri="memory://fake", reload_interval_s=0, summary_interval_s=0.3)
    with caplog.at_level(logging.DEBUG, logger="components.serving"), LiveServer(settings, holder) as running:
        running.wait_ready(timeout_s=30)
        running.predict({"instances": [{"user_id": "u"}, {"user_id": "v"}]})
        running.request("POST", "/predict", b"{}")
        deadline = time.monotonic() + 30
        while sum(_summaries(caplog, r"(\d+) requests")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "components.serving"]
    assert any(re.fullmatch(r"POST /predict 200, 2 instances, [\d.]+ ms", line) for line in lines), lines
    assert "POST /predict 400, 0 instances" in caplog.text and ": instances: missing" in caplog.text
    assert sum(_summaries(caplog, r"(\d+) requests")) == 2
    assert sum(_summaries(caplog, r"(\d+) refused \(4xx\)")) == 1
    assert all(line.endswith("model fake-1") for line in lines if line.startswith("last "))


def _summaries(caplog, pattern: str) -> list[int]:
    """The numbers `pattern` picks from the summary lines logged so far."""
    lines = [r.getMessage() for r in caplog.records if r.name == "components.serving"]
    return [int(m.group(1)) for line in lines if line.startswith("last ") for m in [re.search(pattern, line)] if m]
