# shadowlab: `make demo` and `make test` are the whole set-up on a machine with python3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SAMPLE := data/samples/trigger-shift
OUT    := out

.PHONY: demo test lint bench bench-smoke clean sample browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,notebooks]'
	touch $(STAMP)

# Debian's chromium for the HTML report's browser tests; the tests skip with a reason if absent.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "make: could not install chromium; browser tests will be skipped"; }

demo: $(STAMP)
	$(PY) -m shadowlab.cli summary $(SAMPLE)/pairs

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check shadowlab tests benchmarks
	$(PY) -m ruff format --check shadowlab tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run.py --rows 1e6,1e7,5e7

bench-smoke: $(STAMP)
	$(PY) benchmarks/run.py --rows 1e5 --repeat 1

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
