# flotilla — the two commands that matter: `make demo` (the main job) and `make test`.
BUILD_DIR ?= build
ASAN_DIR  ?= build-asan
FUZZ_DIR  ?= build-fuzz
JOBS      ?= $(shell nproc)
CMAKE_GEN  = -G Ninja

.PHONY: all deps build test unit-test asan-test fuzz bench bench-gateway bench-gateway-features bench-supervisor demo clean

all: build

deps:
	@bash scripts/deps.sh

$(BUILD_DIR)/build.ninja: | deps
	@cmake -S . -B $(BUILD_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=Release >/dev/null

build: deps $(BUILD_DIR)/build.ninja
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Everything CI runs: the Release build's unit and integration tests, the same tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, and a short fuzzing run.
test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j 2
	@$(MAKE) --no-print-directory asan-test
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-30}

unit-test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -E '^integration'

# The sanitizer build is a unity build (src/ merged 8 files per compile, unit tests not): each
# file of src/ otherwise parses the same Asio/Beast headers again, and CI builds it from scratch.
# A name in an anonymous namespace of src/ must therefore be unique across src/.
asan-test: deps
	@cmake -S . -B $(ASAN_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOTILLA_SANITIZE=ON -DCMAKE_UNITY_BUILD=ON >/dev/null
	@cmake --build $(ASAN_DIR) -j $(JOBS)
	@cd $(ASAN_DIR) && FLOTILLA_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j 2

FUZZ_SECONDS ?= 60
# Each libFuzzer target runs FUZZ_SECONDS on its corpus (seeds in tests/fuzz/corpus/NAME).
FUZZERS = registry_decode gateway_request gateway_response config_file
fuzz: deps
	@CXX=clang++ cmake -S . -B $(FUZZ_DIR) $(CMAKE_GEN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLOTILLA_FUZZ=ON -DFLOTILLA_TESTS=OFF >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZERS))
	@for f in $(FUZZERS); do \
	   mkdir -p $(FUZZ_DIR)/corpus-$$f && cp -n tests/fuzz/corpus/$$f/* $(FUZZ_DIR)/corpus-$$f/ 2>/dev/null; \
	   dict=""; [ -f tests/fuzz/$$f.dict ] && dict="-dict=tests/fuzz/$$f.dict"; \
	   if timeout -k 10 $$(( $(FUZZ_SECONDS) + 120 )) $(FUZZ_DIR)/fuzz_$$f -max_total_time=$(FUZZ_SECONDS) \
	        -max_len=4096 $$dict -print_final_stats=1 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
	        -artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_DIR)/corpus-$$f > $(FUZZ_DIR)/fuzz-$$f.log 2>&1; then \
	     echo "fuzz_$$f: no crash in $(FUZZ_SECONDS)s ($$(ls $(FUZZ_DIR)/corpus-$$f | wc -l) corpus inputs)"; \
	   else tail -n 60 $(FUZZ_DIR)/fuzz-$$f.log; echo "fuzz_$$f FAILED (input saved as $(FUZZ_DIR)/crash-*, oom-* or leak-*; killed if it ran 120 s past its time)"; exit 1; fi; \
	 done

bench: build
	@bash bench/registry/run.sh
	@bash bench/gateway/run.sh
	@bash bench/supervisor/run.sh

# flotilla's gateway against nginx and HAProxy as proxies (bench/gateway/run.sh; knobs in its header).
bench-gateway: build
	@bash bench/gateway/run.sh

# What each gateway feature costs against a one-route baseline: access log, rate limit, 1000s of
# routes, load balancers over 200 instances, big heads and bodies, 2 workers
# (bench/gateway/features.sh, about 10 minutes; knobs in its header, e.g. ONLY=access_log,maglev_200).
bench-gateway-features: build
	@bash bench/gateway/features.sh

# The supervisor's numbers: up -> all healthy, death -> out of routing, failed requests during
# rolling deploys, load step -> autoscaled instances serving (bench/supervisor/run.sh).
bench-supervisor: build
	@bash bench/supervisor/run.sh

# The main job: `flotilla up` on examples/hello (web in Python, quotes in Node.js, behind the
# gateway), then what to try (scripts/demo.sh).
demo: build
	@bash scripts/demo.sh

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
