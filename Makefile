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

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev,notebooks,spark]'
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

demo: $(STAMP)
	$(PY) -m shadowlab.cli summary $(SAMPLE)/pairs

test: $(STAMP) system
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
