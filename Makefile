# openheim developer commands. `make run` and `make test` are the whole set-up.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
PIP    := $(PY) -m pip --disable-pip-version-check
CORE_SOURCES := $(wildcard src/_core/*) CMakeLists.txt pyproject.toml

.PHONY: help run test lint typecheck pytest services asan wheel bench-core bench-agent bench-local bench-state bench bench-compare bench-all clean proto

help:
	@echo "make run        create .venv, install openheim, run the example agent"
	@echo "make test       install dev extras, start local services, ruff + mypy + pytest"
	@echo "make asan       build the core with ASan+UBSan and run the native tests"
	@echo "make wheel      build a manylinux wheel into wheels/"
	@echo "make bench-core run the native-core benchmarks (ratios against the stdlib)"
	@echo "make bench-local run the llama.cpp benchmarks on the demo model"
	@echo "make bench      the micro-benchmarks on pytest-benchmark, peers side by side (--benchmark-json)"
	@echo "make bench-compare  the micro-benchmarks against the last saved run (fails on a 20% slowdown)"
	@echo "make bench-all  run every benchmark group of benches/run.py (local, server, state...)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Build requirements live in the venv so rebuilds are incremental (build/).
$(VENV)/.build-deps: $(PY)
	$(PIP) install -q "scikit-build-core>=0.10" "cython>=3.0.11" "cython-cmake>=0.2" ninja
	@touch $@

# llama-cpp-python is built from source once per machine, for a portable CPU
# target (x86-64: AVX2/FMA/F16C, no AMX, whose kernels crash on some VMs), and
# the wheel kept in $(LLAMA_WHEELS) so later venvs and CI runs reuse it.
# GPU boxes: LLAMA_CMAKE_ARGS="-DGGML_CUDA=on" make ... (see README).
LLAMA_VERSION ?= 0.3.36
LLAMA_WHEELS  ?= $(HOME)/.cache/openheim/wheels
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif
LLAMA_WHEEL = $(firstword $(wildcard $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl))

# llama.cpp's own `llama-batched-bench`, the limit row of `make bench-local`: built
# once per machine from the llama.cpp vendored in the same llama-cpp-python source
# distribution, with the same flags as the wheel, and kept beside it.
LLAMA_SDISTS := $(HOME)/.cache/openheim/sdist
LLAMA_BATCHED_BENCH ?= $(HOME)/.cache/openheim/bin/llama-batched-bench-$(LLAMA_VERSION)

$(LLAMA_BATCHED_BENCH): | $(PY)
	mkdir -p $(LLAMA_SDISTS) $(dir $@)
	$(PIP) download -q --no-binary :all: --no-deps -d $(LLAMA_SDISTS) llama-cpp-python==$(LLAMA_VERSION)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  tar xzf $(LLAMA_SDISTS)/llama_cpp_python-$(LLAMA_VERSION).tar.gz -C "$$tmp" && \
	  cmake -S "$$tmp/llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp" -B "$$tmp/build" -G Ninja \
	    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TOOLS=ON \
	    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
	    $(LLAMA_CMAKE_ARGS) >/dev/null && \
	  cmake --build "$$tmp/build" --target llama-batched-bench -j $$(nproc) && \
	  cp "$$tmp/build/bin/llama-batched-bench" $@.tmp && mv $@.tmp $@

.PHONY: batched-bench
batched-bench: $(LLAMA_BATCHED_BENCH)

$(VENV)/.llama: $(PY)
	@if [ -z "$(LLAMA_WHEEL)" ]; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) once for this machine (5-10 min)"; \
	  mkdir -p $(LLAMA_WHEELS); \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION); fi
	$(PIP) install -q "$$(ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl | head -1)[server]"
	@touch $@

$(VENV)/.installed-run: $(VENV)/.build-deps $(VENV)/.llama $(CORE_SOURCES)
	$(PIP) install -q --no-build-isolation -e ".[local,demo]"
	@touch $@

# The demo model too: the CLI's first-answer test runs `openheim init --model` on it.
$(VENV)/.installed-dev: $(VENV)/.build-deps $(VENV)/.llama $(CORE_SOURCES)
	$(PIP) install -q --no-build-isolation -e ".[dev,demo]"
	@touch $@

run: $(VENV)/.installed-run
	$(BIN)/openheim demo

services:
	@bash tests/services.sh

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benches
	$(BIN)/ruff format --check src tests benches
	$(BIN)/lint-imports

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy
	$(PY) -m mypy.stubtest openheim._core --allowlist stubtest-allowlist.txt

pytest: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

test: $(VENV)/.installed-dev services lint typecheck pytest

# ---- native core under sanitizers ---------------------------------------------
# The native llama loop (lengine.c) runs there too, on the tiny generated GGUF,
# against the llama-cpp-python wheel built once for this machine.
ASAN_VENV := .venv-asan
asan: $(VENV)/.build-deps $(VENV)/.llama
	test -x $(ASAN_VENV)/bin/python || $(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/pip install -q --disable-pip-version-check "scikit-build-core>=0.10" "cython>=3.0.11" "cython-cmake>=0.2" ninja pytest pytest-asyncio hypothesis msgspec \
	  "$$(ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl | head -1)" "gguf>=0.10" numpy jinja2
	OPENHEIM_DEBUG=1 $(ASAN_VENV)/bin/pip install -q --disable-pip-version-check --no-build-isolation --no-deps --force-reinstall .
	cd tests && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_init_order=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  PYTHONMALLOC=malloc ../$(ASAN_VENV)/bin/python -m pytest -p no:cacheprovider -q -m "not slow" core

# ---- wheels -------------------------------------------------------------------
wheel: $(VENV)/.installed-dev
	rm -rf wheels/build && mkdir -p wheels/build
	$(PIP) wheel --no-deps --no-build-isolation -w wheels/build .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair --wheel-dir wheels wheels/build/openheim-*.whl
	rm -rf wheels/build
	@ls -1 wheels/*.whl

# ---- benchmarks ---------------------------------------------------------------
# The `bench` extra holds the baselines (pydantic-ai, LangGraph); it is not part of dev.
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(PIP) install -q --no-build-isolation -e ".[dev,bench,demo]"
	@touch $@

bench-core: $(VENV)/.installed-dev
	$(PY) benches/run.py core

bench-agent: $(VENV)/.installed-bench
	$(PY) benches/run.py agent

# Local inference on the demo model; the same GGUF and thread count for both sides.
bench-local: $(VENV)/.installed-bench $(LLAMA_BATCHED_BENCH)
	OPENHEIM_BATCHED_BENCH=$(LLAMA_BATCHED_BENCH) $(PY) benches/run.py local

bench-state: $(VENV)/.installed-bench
	$(PY) benches/run.py state

# The micro-benchmarks on pytest-benchmark (benches/test_pb_*.py): openheim and each
# baseline side by side, ratios printed at the end; every run saved under .benchmarks/.
# PB_ARGS=--bench-check fails on a ratio below its target; PB_ARGS="-k mailbox" picks.
# bench_server, bench_local(_server) and bench_batch stay scripts (make bench-all):
# their figures are throughput of other processes under a fixed-duration load, which
# a pytest-benchmark round (one timed call) cannot hold; see benches/README.md.
BENCH_STORAGE ?= .benchmarks
PB_ARGS ?=
BENCH_PYTEST = $(PY) -m pytest benches -p no:cacheprovider -q --benchmark-only \
	--benchmark-storage=$(BENCH_STORAGE) --benchmark-columns=median,iqr,rounds $(PB_ARGS)

bench: $(VENV)/.installed-bench
	$(BENCH_PYTEST) --benchmark-autosave --benchmark-json=$(BENCH_STORAGE)/latest.json

# Against the last saved `make bench` run; fails when a median is 20 % worse.
bench-compare: $(VENV)/.installed-bench
	$(BENCH_PYTEST) --benchmark-compare --benchmark-compare-fail=median:20%

# Every macro group of benches/run.py (local inference, server, state, workflow...).
bench-all: $(VENV)/.installed-bench
	$(PY) benches/run.py all $(RUN_ARGS)

clean:
	rm -rf build _skbuild dist wheels/*.whl wheels/build .pytest_cache .mypy_cache .ruff_cache

# ---- gRPC: regenerate the checked-in modules from src/openheim/server/openheim.proto ----
proto: $(VENV)/.installed-dev
	$(PY) -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
		src/openheim/server/openheim.proto

# ---- hardening (issue 17): soak, fuzzing, valgrind, a wheel per Python ----------------------
# `make soak` prints one table: load held, faults survived, bad inputs tried, lost or
# duplicated (0). SOAK_ARGS=--quick for a few minutes; see soak/soak_run.py for the knobs.
# The fast versions run in CI as tests/hardening/test_harden_*.py.
.PHONY: soak fuzz valgrind wheels
SOAK_ARGS ?=
FUZZ_RUNS ?= 1000000
soak: $(VENV)/.installed-dev
	$(PY) soak/soak_run.py $(SOAK_ARGS)

fuzz: $(VENV)/.installed-dev
	$(PY) fuzz/fuzz_run.py --runs $(FUZZ_RUNS)

# The native core's concurrency tests under valgrind memcheck (the release build, the
# system allocator so every Python object is a malloc valgrind sees).
VALGRIND_TESTS ?= core/test_mailbox.py core/test_sched.py core/test_sched_timers.py core/test_tokbuf.py core/test_wal.py core/test_codec.py
# Hypothesis's speed health checks are off under memcheck (scripts/hypothesis_valgrind.py);
# VALGRIND_ARGS=-s lists the suppressions used.
VALGRIND_ARGS ?=
valgrind: $(VENV)/.installed-dev
	cd tests && PYTHONMALLOC=malloc PYTHONHASHSEED=0 PYTHONPATH=$(abspath scripts) \
	  valgrind --tool=memcheck --error-exitcode=99 \
	  --leak-check=no --track-origins=no --num-callers=30 $(VALGRIND_ARGS) \
	  --suppressions=$(abspath scripts/valgrind-python.supp) \
	  ../$(PY) -m pytest -p no:cacheprovider -p hypothesis_valgrind --hypothesis-profile=valgrind \
	  -q -m "not slow" $(VALGRIND_TESTS)

# A repaired wheel for every CPython 3.10-3.13 found (pyenv, or python3.1x on PATH), each
# installed in a fresh venv of its version outside the tree where the core tests run; an sdist.
wheels: $(VENV)/.installed-dev
	PATH="$(abspath $(BIN)):$$PATH" $(PY) scripts/wheels.py
