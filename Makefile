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

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q tests

compile: venv
	$(PY) -m pipelines.compile --output $(PIPELINE_SPEC)

pipeline-run: venv
	$(PY) -m pipelines.run --target $(TARGET) --output $(OUTPUT) --shop $(SHOP)

bench: venv
	$(PY) -m bench.run --data $(DATA) --format $(FORMAT) --out $(OUT) --seeds $(SEEDS)

lock: venv
	$(PY) -m pip freeze --exclude-editable | grep -vi shop-recsys > requirements.lock.new
	( head -2 requirements.lock; cat requirements.lock.new ) > requirements.lock.tmp && rm requirements.lock.new && mv requirements.lock.tmp requirements.lock

clean:
	rm -rf $(VENV) runs build *.egg-info

-include docker/images.mk
