# Thin wrapper over CMake. `make` builds build/qat; `make test` builds and runs every test;
# `make demo` runs the main job on the embedded default (stories260K).
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure test demo clean bench

all: deps configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	@./scripts/deps.sh

configure: deps
	@[ -f $(BUILD)/CMakeCache.txt ] || cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: all
	./scripts/demo.sh $(BUILD)/qat

clean:
	rm -rf $(BUILD)
