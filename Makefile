# Konera QoD. `make` builds build/qodd and build/qodctl; `make run` starts the daemon; `make test` runs every test.
# SANITIZE=1 builds into build/san with ASan+UBSan; CC=clang works as well as gcc.

CC ?= cc
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT ?= -O1
else
BUILD ?= build
SANFLAGS :=
OPT ?= -O2
endif

PKGS := libmicrohttpd libcurl libcjson openssl sqlite3 libnl-route-3.0 libpq
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS ?= $(OPT) -g
CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
          -Wno-missing-field-initializers -fno-strict-aliasing -pthread -Isrc $(PKG_CFLAGS) $(SANFLAGS) -MMD -MP
LDFLAGS += -pthread $(SANFLAGS)
LDLIBS += $(PKG_LIBS) -lm

LIB_SRC := $(sort $(wildcard src/util/*.c src/core/*.c src/api/*.c src/auth/*.c src/store/*.c src/notify/*.c src/net/*.c src/daemon/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libqod.a

UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%)
TOOL_SRC := $(sort $(wildcard tests/tools/*.c))
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)

.PHONY: all deps run test test-pg test-cluster test-faults unit e2e clean fuzz fuzz-build bench format
all: $(BUILD)/qodd $(BUILD)/qodctl

deps:
	@scripts/deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/qodd: $(BUILD)/obj/src/qodd.o $(LIB)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/qodctl: $(BUILD)/obj/src/qodctl.o $(LIB)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	@$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/obj/tests/%.o: CFLAGS += -Itests/unit

# `make run`: install what is missing, build, start on the embedded defaults (127.0.0.1:8080, ./var, sim network).
run: deps
	@$(MAKE) --no-print-directory all
	@scripts/run.sh $(BUILD)

# `make test`: every unit and e2e test, in parallel; ends with "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(TOOL_BIN)
	@python3 tests/run.py --build $(BUILD) $(if $(T),--only $(T))

# `make test-pg`: the e2e tests again, each daemon on its own database in a throw-away PostgreSQL cluster
# (tests/tools/test-pg.sh); the unit tests, the PostgreSQL store's included, already ran in `make test`.
test-pg: deps
	@$(MAKE) --no-print-directory all $(TOOL_BIN)
	@tests/tools/test-pg.sh $(BUILD) $(if $(T),--only $(T))

# `make test-cluster`: the e2e files below again on PostgreSQL, each daemon being 3 qodd nodes on its database
# (QOD_TEST_CLUSTER=3, see tests/e2e/qodlib.py) with requests round-robin over the nodes. T=substring picks files.
CLUSTER_E2E := test_sessions_v0 test_camara_v1 test_provisioning test_callbacks test_foundation test_hardening
test-cluster: deps
	@$(MAKE) --no-print-directory all $(TOOL_BIN)
	@QOD_TEST_CLUSTER=3 tests/tools/test-pg.sh $(BUILD) $(addprefix --only ,$(or $(T),$(CLUSTER_E2E)))

# The long fault-injection tests (also run by CI).
test-faults: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(TOOL_BIN)
	@python3 tests/run.py --build $(BUILD) --dir tests/faults --allow-empty --jobs 1 --timeout 1800

unit: all $(UNIT_BIN)
	@python3 tests/run.py --build $(BUILD) --unit-only

# Fuzzing: libFuzzer targets (tests/fuzz/fuzz_*.c) built with clang against a sanitized library.
# `make fuzz FUZZ_SECONDS=N` runs each target N seconds on its committed corpus and dictionary.
FUZZ_SECONDS ?= 10
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
fuzz-build: deps
	@$(MAKE) --no-print-directory CC=clang BUILD=build/fuzz OPT=-O1 \
	    SANFLAGS="-fsanitize=address,undefined,fuzzer-no-link -fno-omit-frame-pointer" build/fuzz/libqod.a
	@$(MAKE) --no-print-directory CC=clang BUILD=build/fuzz OPT=-O1 $(FUZZ_BIN)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libqod.a
	@echo "  FUZZ    $@"
	@clang -O1 -g -std=c11 -D_GNU_SOURCE -Isrc $(PKG_CFLAGS) -fsanitize=address,undefined,fuzzer \
	    $< build/fuzz/libqod.a -o $@ $(PKG_LIBS) -lm -pthread

fuzz: fuzz-build
	@scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# Benchmarks (not part of `make test`): an optimised build, wrk and nginx from Debian, results written to
# docs/benchmarks.md and bench/results.json. QUICK=1 runs a one-minute subset.
bench: deps
	@$(MAKE) --no-print-directory BUILD=build/bench OPT="-O2 -DNDEBUG" all
	@python3 bench/run.py --build build/bench $(if $(QUICK),--quick)

clean:
	rm -rf build

# The style is the committed .clang-format; every C file of the project follows it.
format:
	clang-format -i $(LIB_SRC) src/*.c src/*/*.h $(UNIT_SRC) tests/unit/*.h tests/unit/*/*.h $(FUZZ_SRC) \
	    tests/fuzz/*.h $(TOOL_SRC)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# The OpenAPI file is embedded with .incbin; rebuild when it changes.
$(BUILD)/obj/src/api/openapi_blob.o: docs/openapi/konera-qod-v0.yaml
