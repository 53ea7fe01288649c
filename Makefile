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

.PHONY: help venv test compile pipeline-run report-check bench serve serve-bench lock clean

help: ## list every target with its one-line description (this list)
	@awk 'BEGIN {FS = ":[^#]*## "} /^[a-zA-Z0-9_.-]+:[^=]*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: requirements.lock requirements-test.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-test.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create .venv from the lock files (every target does this when it is missing)

test: venv ## run the tests in tests/ (the whole DAG end to end on the tiny shop included)
	$(PY) -m pytest -q tests

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
report-check: venv ## open the evaluation report in headless Chromium; fail on console errors or missing images
	@command -v chromium >/dev/null || { echo "report-check needs Debian's chromium: apt-get install chromium" >&2; exit 2; }
	$(PY) -m pipelines.report_check $(if $(REPORT),$(call q,$(REPORT))) --output $(call q,$(OUTPUT))

bench: venv ## benchmark JSON of one dataset (DATA=, FORMAT=amazon|taobao|synthetic, OUT=, SEEDS=, ABLATIONS=dien_no_aux)
	$(PY) -m bench.run --data $(call q,$(DATA)) --format $(call q,$(FORMAT)) --out $(call q,$(OUT)) --seeds $(call q,$(SEEDS)) \
	  --ablations $(call q,$(ABLATIONS))

# The last blessed model of a local run (OUTPUT) on PORT, in the foreground; LOG_LEVEL=debug logs every request.
serve: venv ## serve the last blessed model on PORT in the foreground (MODEL=, PORT=, LOG_LEVEL=)
	$(PY) -m components.serving.server --model $(call q,$(MODEL)) --host $(call q,$(SERVE_HOST)) \
	  --port $(call q,$(PORT)) --log-level $(call q,$(LOG_LEVEL))

# That server on loopback, REQUESTS requests from 1, 8 and 32 clients: serving.* keys into the bench JSON OUT.
serve-bench: venv ## latency/throughput of that server on loopback from 1, 8 and 32 clients (OUT=, REQUESTS=)
	$(PY) -m components.serving.bench --model $(call q,$(MODEL)) --out $(call q,$(OUT)) --requests $(call q,$(REQUESTS))

# Re-pins the runtime tree (what the image installs) and, separately, the test-only tree on top of it.
lock: venv ## re-pin requirements.lock and requirements-test.lock from the venv
	$(PY) -m pip freeze --all --exclude-editable | grep -vi shop-recsys > .lock.all
	grep -v '^#' requirements-test.lock | cut -d= -f1 > .lock.test-names
	( head -2 requirements.lock; awk -F'==' 'NR==FNR {t[tolower($$1)]; next} !(tolower($$1) in t)' .lock.test-names .lock.all ) > .lock.run
	( head -2 requirements-test.lock; awk -F'==' 'NR==FNR {t[tolower($$1)]; next} (tolower($$1) in t)' .lock.test-names .lock.all ) > .lock.test
	mv .lock.run requirements.lock && mv .lock.test requirements-test.lock && rm .lock.all .lock.test-names

clean: ## remove .venv, runs/ and build outputs
	rm -rf $(VENV) runs build *.egg-info

-include docker/images.mk
