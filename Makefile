# biflow build. `make` builds libbiflow (static and shared), the biflow CLI and the tests;
# `make test` runs the tests (with a short run of every fuzz harness when clang has libFuzzer).
# `make fuzz` builds the libFuzzer harnesses (build/fuzz/), `make SAN=1` the library, CLI and
# tests with AddressSanitizer and UBSan into build-san/ (`make SAN=1 test` runs them there).
CC      ?= gcc
# MPI (data-parallel training under mpirun, src/dist.c): with mpicc on the PATH the library,
# CLI and tests are built with it and -DBF_MPI; MPI=0 builds without (the CLI then always runs
# as one process). SAN=1 defaults to MPI=0: the sanitizers would report MPI's own allocations.
# `make clean` after changing it (the objects do not record how they were built).
ifeq ($(SAN),1)
MPI     ?= 0
else
MPI     ?= $(if $(shell command -v mpicc 2>/dev/null),1,0)
endif
ifeq ($(MPI),1)
CC      := mpicc
MPIFLAGS := -DBF_MPI
endif
# SAN=1: the same library, CLI and tests with AddressSanitizer (leaks included) and UBSan, every
# report fatal, in build-san/ (the CLI as build-san/biflow): the normal build is untouched.
ifeq ($(SAN),1)
B        := build-san
CLI      := build-san/biflow
OPT      ?= -O2
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
B        := build
CLI      := biflow
endif
# Prefer OpenBLAS's OpenMP build so BLAS threads and our OpenMP threads share one pool.
BLASDIR := $(firstword $(wildcard /usr/lib/$(shell gcc -print-multiarch 2>/dev/null)/openblas-openmp) )
ARCH    ?= -march=native
OPT     ?= -O3
CFLAGS  += -std=c11 $(OPT) $(ARCH) -fopenmp -fno-math-errno -fPIC -g $(SANFLAGS) $(MPIFLAGS) \
           -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Iinclude -Isrc
comma   := ,
BLASLIB := $(if $(BLASDIR),-L$(BLASDIR) -Wl$(comma)-rpath$(comma)$(BLASDIR)) -lopenblas
LDLIBS  += $(BLASLIB) -llapack -lcjson -lcrypto -lpng -ljpeg -lz -lm -fopenmp

SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=$(B)/obj/%.o)
TOOLSRC := $(wildcard tools/*.c)
TOOLOBJ := $(TOOLSRC:tools/%.c=$(B)/tools/%.o)
TESTSRC := $(wildcard tests/*.c)
TESTOBJ := $(TESTSRC:tests/%.c=$(B)/tests/%.o)

all: $(B)/libbiflow.a $(B)/libbiflow.so $(CLI) $(B)/test_biflow

$(B)/obj/%.o: src/%.c $(wildcard src/*.h) include/biflow.h | $(B)/obj
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/tools/%.o: tools/%.c $(wildcard src/*.h tools/*.h) include/biflow.h | $(B)/tools
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/tests/%.o: tests/%.c $(wildcard tests/*.h src/*.h) include/biflow.h | $(B)/tests
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libbiflow.a: $(OBJ)
	ar rcs $@ $^
$(B)/libbiflow.so: $(OBJ)
	$(CC) -shared $(SANFLAGS) -o $@ $^ $(LDLIBS)
$(CLI): $(TOOLOBJ) $(B)/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $(TOOLOBJ) $(B)/libbiflow.a $(LDLIBS)
# --wrap=fsync: the tests see which files and folders the library flushes (test_reliability.c)
$(B)/test_biflow: $(TESTOBJ) $(B)/libbiflow.a
	$(CC) $(CFLAGS) -Wl,--wrap=fsync -o $@ $(TESTOBJ) $(B)/libbiflow.a $(LDLIBS)

$(B)/obj $(B)/tools $(B)/tests:
	mkdir -p $@

# ---------------------------------------------------------------- fuzzing (tests/fuzz/)
# Every tests/fuzz/fuzz_NAME.c is a libFuzzer harness, built as build/fuzz/fuzz_NAME against
# the library compiled by clang with coverage, ASan and UBSan (serially: tests/fuzz/serial/omp.h
# stands in for OpenMP). Seeds: tests/fixtures/fuzz/NAME/. Needs clang and its runtime
# (Debian: clang, libclang-rt-14-dev).
FUZZ_CC     ?= clang
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS := -std=c11 -g -O1 -fno-omit-frame-pointer $(FUZZ_SAN) -Wall -Wextra -Werror \
               -Wno-unused-parameter -Wno-unknown-pragmas -Wno-source-uses-openmp \
               -D_GNU_SOURCE -Itests/fuzz/serial -Iinclude -Isrc
FUZZ_LDLIBS := $(BLASLIB) -llapack -lcjson -lcrypto -lpng -ljpeg -lz -lm
FUZZSRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS   := $(FUZZSRC:tests/fuzz/%.c=build/fuzz/%)
FUZZOBJ     := $(SRC:src/%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: src/%.c $(wildcard src/*.h) include/biflow.h tests/fuzz/serial/omp.h | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
build/fuzz/libbiflow.a: $(FUZZOBJ)
	ar rcs $@ $^
# --wrap=fsync: the atomic writes need not wait for the disk (tests/fuzz/wrap_fsync.c)
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_util.h tests/fuzz/wrap_fsync.c build/fuzz/libbiflow.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Wl,--wrap=fsync $(FUZZ_WRAP) -o $@ $< \
	    tests/fuzz/wrap_fsync.c build/fuzz/libbiflow.a $(FUZZ_LDLIBS)
# the plot harness checks the drawn image instead of encoding it (fuzz_log.c)
build/fuzz/fuzz_log: FUZZ_WRAP := -Wl,--wrap=bf_write_png
build/fuzz/obj:
	mkdir -p $@

fuzz: $(FUZZ_BINS)

# Whether FUZZ_CC links a libFuzzer program with both sanitizers (clang and its runtime).
FUZZ_PROBE = mkdir -p build/fuzz && \
	printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }\n' | \
	$(FUZZ_CC) -x c - -fsanitize=fuzzer,address,undefined -o build/fuzz/.probe >/dev/null 2>&1

# Regenerates the seed corpora (tests/fixtures/fuzz/) from tests/fuzz/make_seeds.c.
fuzz-seeds: build/make_seeds
	./build/make_seeds tests/fixtures/fuzz
build/make_seeds: tests/fuzz/make_seeds.c build/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $< build/libbiflow.a $(LDLIBS)

# ---------------------------------------------------------------- tests
# The fuzz harnesses run from the suite (tests/test_fuzz.c); without clang and libFuzzer
# those tests are skipped, and counted as skipped, with BF_FUZZ_SKIP giving the reason.
ifneq ($(SAN),1)
test: build/test_biflow biflow
	@if $(FUZZ_PROBE); then $(MAKE) --no-print-directory fuzz && ./build/test_biflow; \
	else echo "fuzz harnesses not built: $(FUZZ_CC) cannot link -fsanitize=fuzzer,address,undefined"; \
	  BF_FUZZ_SKIP="$(FUZZ_CC) with libFuzzer not available" ./build/test_biflow; fi
else
# The sanitized suite: the tests run build-san/biflow (BF_CLI). Every report ends its process
# with status 86, which no test expects. ASan and LSan reports, of the test binary or of any
# CLI it starts, go to files under build-san/reports (log_path), and the run fails when any
# exists; UBSan's go to stderr (GCC 12 ignores its log_path beside ASan), where bf_test_sh
# fails the test that ran the command. The run fails when the suite fails.
# The fuzz harnesses (sanitized already) run in the normal suite. BF_TEST_SKIP may name slow
# tests to skip (counted as skipped; .ci/run sets it).
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:exitcode=86:abort_on_error=0:log_path=$(CURDIR)/build-san/reports/asan \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=86:log_path=$(CURDIR)/build-san/reports/ubsan \
           LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
           BF_CLI=build-san/biflow BF_FUZZ_SKIP="fuzz harnesses: run by the normal suite (make test)"
test: build-san/test_biflow build-san/biflow
	@rm -rf build-san/reports && mkdir -p build-san/reports
	@$(SAN_ENV) ./build-san/test_biflow; rc=$$?; \
	if [ -n "$$(ls build-san/reports)" ]; then \
	  echo "sanitizer reports (build-san/reports):"; cat build-san/reports/*; rc=1; fi; exit $$rc
endif

clean:
	rm -rf build build-san biflow

.PHONY: all test clean fuzz fuzz-seeds
