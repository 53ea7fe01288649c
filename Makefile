# Every target creates the venv when it is missing, so each one works alone on a fresh clone.
SHELL := /bin/bash
# A failing command fails its recipe, pipes included, so make's status is the program's.
.SHELLFLAGS := -e -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

OUTPUT ?= runs/local
SHOP ?= default
DATA ?= default
FORMAT ?= synthetic
OUT ?= bench/results/bench.json
SEEDS ?= 1
ABLATIONS ?=
TARGET ?= local
PIPELINE_SPEC ?= pipeline.yaml
PARAMS ?=
# Serving: MODEL is a serving model folder, or a registry's serving/ folder (the server follows its LATEST.json).
MODEL ?= $(OUTPUT)/registry/serving
PORT ?= 8080
SERVE_HOST ?= 127.0.0.1
LOG_LEVEL ?= info
REQUESTS ?= 2000
VERBOSE ?=
REPORT ?=
# $(call q,VALUE) is VALUE as one single-quoted shell word, so no variable can split or inject a command.
q = '$(subst ','\'',$(1))'

.PHONY: help venv lint test compile pipeline-run report-tools report-check bench scale-bench lifecycle-bench serve serve-bench lock lock-hashes clean

help: ## list every target with its one-line description (this list)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_.-]+:[^=]*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.lock requirements-test.lock requirements-dev.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock -r requirements-test.lock -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create .venv from the lock files (every target does this when it is missing)

lint: venv ## ruff (lint and format check) and mypy (the files in pyproject's [tool.mypy]); CI runs it before test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# TEST_WORKERS=2: two pytest-xdist workers (CI's machine has 2 cores), each test module, and each folder that shares a
# slow session fixture, on one worker whole (tests/conftest.py); the whole suite so passed in 918 s (874 tests) at
# load 2-3. TEST_WORKERS=0 runs them in this process, one at a time.
TEST_WORKERS ?= 2
test: venv ## run the tests in tests/ (TEST_WORKERS=2: on two processes; the whole DAG end to end on the tiny shop included)
	$(PY) -m pytest -q tests -n $(call q,$(TEST_WORKERS)) --dist loadgroup --no-loadscope-reorder

compile: venv ## write the KFP v2 spec for Vertex AI or Kubeflow (PIPELINE_SPEC=pipeline.yaml)
	$(PY) -m pipelines.compile --output $(call q,$(PIPELINE_SPEC))

# TARGET=local (kfp.local) | vertex (PROJECT, REGION, BUCKET[, SERVICE_ACCOUNT, SCHEDULE])
# | kfp (HOST, WAREHOUSE_URI, DESTINATION[, SCHEDULE]); PARAMS="name=value ..." sets pipeline parameters on any target.
pipeline-run: venv ## run the pipeline (TARGET=local|vertex|kfp, SHOP=, SOURCE=, OUTPUT=, PARAMS="name=value ...", VERBOSE=1)
	@$(PY) -m pipelines.run $(if $(VERBOSE),--verbose) --target $(call q,$(TARGET)) --output $(call q,$(OUTPUT)) --shop $(call q,$(SHOP)) \
	  $(if $(SOURCE),--source $(call q,$(SOURCE))) $(if $(PROJECT),--project $(call q,$(PROJECT))) \
	  $(if $(REGION),--region $(call q,$(REGION))) $(if $(BUCKET),--bucket $(call q,$(BUCKET))) \
	  $(if $(SERVICE_ACCOUNT),--service-account $(call q,$(SERVICE_ACCOUNT))) $(if $(HOST),--host $(call q,$(HOST))) \
	  $(if $(SCHEDULE),--schedule $(call q,$(SCHEDULE))) $(if $(WAREHOUSE_URI),--warehouse-uri $(call q,$(WAREHOUSE_URI))) \
	  $(if $(DESTINATION),--destination $(call q,$(DESTINATION))) $(foreach p,$(PARAMS),--param $(call q,$(p)))

# Opens the report in headless Chromium (Debian's chromium package), fails on a console error or an image that
# did not load, and writes screenshots to runs/report-check/. REPORT= a report.html; default: OUTPUT's newest run.
report-tools: ## install Debian's chromium when missing (apt-get, with sudo unless root; CI runs it so the browser tests run)
	@command -v chromium >/dev/null || { sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

report-check: venv ## open the evaluation report in headless Chromium; fail on console errors or missing images
	@command -v chromium >/dev/null || { echo "report-check needs Debian's chromium: apt-get install chromium" >&2; exit 2; }
	$(PY) -m pipelines.report_check $(if $(REPORT),$(call q,$(REPORT))) --output $(call q,$(OUTPUT))

bench: venv ## benchmark JSON of one dataset (DATA=, FORMAT=amazon|taobao|synthetic, OUT=, SEEDS=, ABLATIONS=dien_no_aux, PARAMS=)
	$(PY) -m bench.run --data $(call q,$(DATA)) --format $(call q,$(FORMAT)) --out $(call q,$(OUT)) --seeds $(call q,$(SEEDS)) \
	  --ablations $(call q,$(ABLATIONS)) $(foreach p,$(PARAMS),--param $(call q,$(p)))

# A week of daily runs on a small synthetic shop (new items each day, some retired, day 5 broken upstream), cold vs
# warm-started retrieval and DIEN, SEEDS seeds (default 3): the `lifecycle` keys of the bench JSON OUT. About 45 minutes at its default --scale 20.
PRESETS ?= tiny,default,medium,large
OUT_DIR ?= runs/scale
scale-bench: venv ## the bench on several shop sizes: per-stage wall/CPU/memory against events, log-log fit (PRESETS=, OUT_DIR=, STAGES=, REUSE=1)
	nice -n 10 $(PY) -m bench.scale --presets $(call q,$(PRESETS)) --out-dir $(call q,$(OUT_DIR)) \
	  $(if $(STAGES),--stages $(call q,$(STAGES))) $(if $(REUSE),--reuse)

lifecycle-bench: venv ## week simulation, cold vs warm start, new items, drift check (OUT=, SEEDS= default 3)
	nice -n 10 $(PY) -m bench.lifecycle --out $(call q,$(OUT)) $(if $(filter command line environment,$(origin SEEDS)),--seeds $(call q,$(SEEDS)))

# The last blessed model of a local run (OUTPUT) on PORT, in the foreground; LOG_LEVEL=debug logs every request.
serve: venv ## serve the last blessed model on PORT in the foreground (MODEL=, PORT=, LOG_LEVEL=)
	$(PY) -m components.serving.server --model $(call q,$(MODEL)) --host $(call q,$(SERVE_HOST)) \
	  --port $(call q,$(PORT)) --log-level $(call q,$(LOG_LEVEL))

# That server on loopback, REQUESTS requests from 1, 8 and 32 clients: serving.* keys into the bench JSON OUT.
serve-bench: venv ## latency/throughput of that server on loopback from 1, 8 and 32 clients (OUT=, REQUESTS=)
	$(PY) -m components.serving.bench --model $(call q,$(MODEL)) --out $(call q,$(OUT)) --requests $(call q,$(REQUESTS))

# Re-pins the runtime tree (what the image installs) and, separately, the test-only and the lint-only trees on top of
# it (names as in requirements-test.lock and requirements-dev.lock), then hashes every pin.
lock: venv ## re-pin requirements.lock, requirements-test.lock and requirements-dev.lock from the venv, with hashes
	$(PY) -m pip freeze --all --exclude-editable | grep -vi shop-recsys > .lock.all
	grep -hE '^[A-Za-z0-9]' requirements-test.lock | cut -d= -f1 > .lock.test-names
	grep -hE '^[A-Za-z0-9]' requirements-dev.lock | cut -d= -f1 > .lock.dev-names
	pick() { awk -F'==' 'NR==FNR {t[tolower($$1)]; next} (tolower($$1) in t) == keep' keep=$$1 $$2 .lock.all; }; \
	( head -2 requirements.lock; cat .lock.test-names .lock.dev-names > .lock.other-names; pick 0 .lock.other-names ) > .lock.run; \
	( head -2 requirements-test.lock; pick 1 .lock.test-names ) > .lock.test; \
	( head -2 requirements-dev.lock; pick 1 .lock.dev-names ) > .lock.dev
	mv .lock.run requirements.lock && mv .lock.test requirements-test.lock && mv .lock.dev requirements-dev.lock
	rm .lock.all .lock.test-names .lock.dev-names .lock.other-names
	$(MAKE) lock-hashes

# The image, CI and `make venv` install with --require-hashes, so every pin carries the sha256 of its file.
lock-hashes: ## add each pin's sha256 (from the package index, as pip would install it here) to every lock file
	$(PY) tools/hash_locks.py requirements.lock requirements-test.lock requirements-dev.lock docker/requirements-gpu.lock

clean: ## remove .venv, runs/ and build outputs
	rm -rf $(VENV) runs build *.egg-info

-include docker/images.mk
