# shadowlab: `make demo` and `make test` are the whole set-up on a machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAMPLE := data/samples/trigger-shift
OUT    := out

.PHONY: demo test lint bench bench-smoke clean system

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml hatch_build.py shadowlab/_fold.c | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,notebooks,spark]'
	$(PY) -m compileall -q shadowlab  # bytecode, as an installed package has (even if PYTHONDONTWRITEBYTECODE)
	touch $(STAMP)

# System packages the tests use: Debian's chromium + chromedriver (the HTML report's browser test)
# and a Java runtime (Spark local mode). Tests that need one skip with a reason if it is absent.
system:
	@need=""; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	command -v chromedriver >/dev/null 2>&1 || need="$$need chromium-driver"; \
	command -v java >/dev/null 2>&1 || need="$$need openjdk-17-jre-headless"; \
	if [ -n "$$need" ]; then \
	  echo "make: installing$$need"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$need >/dev/null) \
	    || echo "make: could not install$$need; the tests that need them will be skipped"; \
	fi

# The main job on the bundled sample week: validate the logs, run the gate the way the article's
# team would have (v1's threshold reused: FAIL), then with the calibrated threshold (PASS), sign
# it, verify it as a deploy step would, and write the HTML report.
T1 = $$($(PY) -c "import json; print(json.load(open('$(SAMPLE)/manifest.json'))['primary_threshold'])")
GATE_ARGS = $(SAMPLE)/pairs --labels $(SAMPLE)/labels --reference $(SAMPLE)/reference.parquet

demo: $(STAMP)
	@mkdir -p $(OUT)
	$(PY) -m shadowlab.cli summary $(SAMPLE)/pairs
	@echo; echo "== 1. v2 at v1's threshold (what the article's team shipped)"
	-$(PY) -m shadowlab.cli gate $(GATE_ARGS) --primary-threshold $(T1) --candidate-threshold $(T1) --out $(OUT)/verdict-naive.json
	@echo; echo "== 2. v2 at the calibrated threshold, signed"
	@test -f $(OUT)/demo-key || $(PY) -m shadowlab.cli keygen $(OUT)/demo-key
	$(PY) -m shadowlab.cli gate $(GATE_ARGS) --primary-threshold $(T1) --candidate-threshold calibrate --key $(OUT)/demo-key --out $(OUT)/verdict.json
	@echo; echo "== 3. the deploy step: verify signature and inputs before canary"
	$(PY) -m shadowlab.cli verify $(OUT)/verdict.json --public-key $(OUT)/demo-key.pub --logs $(SAMPLE)/pairs --labels $(SAMPLE)/labels --reference $(SAMPLE)/reference.parquet
	@echo; echo "== 4. the report"
	$(PY) -m shadowlab.cli report $(GATE_ARGS) --primary-threshold $(T1) --verdict $(OUT)/verdict.json --out $(OUT)/report.html

test: $(STAMP) system
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check shadowlab tests benchmarks hatch_build.py
	$(PY) -m ruff format --check shadowlab tests benchmarks hatch_build.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[dev,notebooks,spark,bench]'
	$(PY) benchmarks/run.py --rows 1e6,1e7,5e7

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --rows 1e5 --repeat 1

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache shadowlab/_fold.so
