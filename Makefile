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

.PHONY: demo test install clean-demo browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install --no-cache-dir -e ".[server,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/datacurate run --scale tiny --out runs/tiny

# the leaderboard's browser test drives Debian's chromium with its chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  echo "installing Debian's chromium + chromium-driver for the browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest -ra tests

clean-demo:
	rm -rf runs/tiny
