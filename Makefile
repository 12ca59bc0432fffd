# Two entry points: `make demo` (the offline tiny benchmark end to end) and `make test`.
# Each creates .venv and installs the project if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export SPARK_LOCAL_IP := 127.0.0.1
export PYTHONUNBUFFERED := 1

.PHONY: demo test install clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install --no-cache-dir -e ".[server,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/datacurate run --scale tiny --out runs/tiny

test: $(STAMP)
	$(BIN)/python -m pytest -ra tests

clean-demo:
	rm -rf runs/tiny
