# Every target creates the venv when it is missing, so each one works alone on a fresh clone.
SHELL := /bin/bash
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
TARGET ?= local
PIPELINE_SPEC ?= pipeline.yaml

.PHONY: venv test compile pipeline-run bench lock clean

$(VENV)/.installed: requirements.lock requirements-test.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-test.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

compile: venv
	$(PY) -m pipelines.compile --output $(PIPELINE_SPEC)

# TARGET=local (kfp.local) | vertex (PROJECT, REGION, BUCKET[, SERVICE_ACCOUNT, SCHEDULE])
# | kfp (HOST, WAREHOUSE_URI, DESTINATION[, SCHEDULE])
pipeline-run: venv
	$(PY) -m pipelines.run --target $(TARGET) --output $(OUTPUT) --shop $(SHOP) \
	  $(if $(SOURCE),--source $(SOURCE)) $(if $(PROJECT),--project $(PROJECT)) $(if $(REGION),--region $(REGION)) \
	  $(if $(BUCKET),--bucket $(BUCKET)) $(if $(SERVICE_ACCOUNT),--service-account $(SERVICE_ACCOUNT)) \
	  $(if $(HOST),--host $(HOST)) $(if $(SCHEDULE),--schedule "$(SCHEDULE)") \
	  $(if $(WAREHOUSE_URI),--warehouse-uri $(WAREHOUSE_URI)) $(if $(DESTINATION),--destination $(DESTINATION))

bench: venv
	$(PY) -m bench.run --data $(DATA) --format $(FORMAT) --out $(OUT) --seeds $(SEEDS)

# Re-pins the runtime tree (what the image installs) and, separately, the test-only tree on top of it.
lock: venv
	$(PY) -m pip freeze --all --exclude-editable | grep -vi shop-recsys > .lock.all
	grep -v '^#' requirements-test.lock | cut -d= -f1 > .lock.test-names
	( head -2 requirements.lock; awk -F'==' 'NR==FNR {t[tolower($$1)]; next} !(tolower($$1) in t)' .lock.test-names .lock.all ) > .lock.run
	( head -2 requirements-test.lock; awk -F'==' 'NR==FNR {t[tolower($$1)]; next} (tolower($$1) in t)' .lock.test-names .lock.all ) > .lock.test
	mv .lock.run requirements.lock && mv .lock.test requirements-test.lock && rm .lock.all .lock.test-names

clean:
	rm -rf $(VENV) runs build *.egg-info

-include docker/images.mk
