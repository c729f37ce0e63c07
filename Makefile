# biflow build. `make` builds libbiflow (static and shared), the biflow CLI and the tests;
# `make test` runs the tests (with a short run of every fuzz harness when clang has libFuzzer,
# the Python binding's tests when python3 has numpy, and an install into a temporary prefix
# with a program built by pkg-config). `make install PREFIX=...` installs the library, header,
# biflow.pc, CLI, Python package and shipped models; `make uninstall PREFIX=...` removes them.
# `make fuzz` builds the libFuzzer harnesses (build/fuzz/), `make SAN=1` the library, CLI and
# tests with AddressSanitizer and UBSan into build-san/ (`make SAN=1 test` runs them there).
CC      ?= gcc
# MPI (data-parallel training under mpirun, src/core/dist.c): with mpicc on the PATH the library,
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
# for biflow.pc's Libs.private (a static link by pkg-config): OpenMPI's, else MPICH's spelling
MPILIBS := $(shell mpicc -showme:link 2>/dev/null || mpicc -link_info 2>/dev/null | cut -d' ' -f2-)
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
           -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Iinclude $(SRCINC)
comma   := ,
BLASLIB := $(if $(BLASDIR),-L$(BLASDIR) -Wl$(comma)-rpath$(comma)$(BLASDIR)) -lopenblas
LDLIBS  += $(BLASLIB) -llapack -lcjson -lcrypto -lpng -ljpeg -lz -lm -fopenmp

# The ABI version (the soname libbiflow.so.N) and the release, from the header.
ABI     := $(shell sed -n 's/^\#define BF_ABI_VERSION \([0-9][0-9]*\).*/\1/p' include/biflow.h)
VERSION := $(shell sed -n 's/^\#define BF_VERSION "\(.*\)"/\1/p' include/biflow.h)
SONAME  := libbiflow.so.$(ABI)

# src/ is one folder per layer (docs/ARCHITECTURE.md); headers are included by name
SRCDIRS := $(sort $(dir $(wildcard src/*/*.c src/*/*.h)))
SRCINC  := $(patsubst %/,-I%,$(SRCDIRS))
SRCHDR  := $(wildcard src/*/*.h)
SRC     := $(wildcard src/*/*.c)
OBJ     := $(SRC:src/%.c=$(B)/obj/%.o)
TOOLSRC := $(wildcard tools/*.c)
TOOLOBJ := $(TOOLSRC:tools/%.c=$(B)/tools/%.o)
TESTSRC := $(wildcard tests/*.c)
TESTOBJ := $(TESTSRC:tests/%.c=$(B)/tests/%.o)

all: $(B)/libbiflow.a $(B)/libbiflow.so $(CLI) $(B)/test_biflow

$(B)/obj/%.o: src/%.c $(SRCHDR) include/biflow.h | $(B)/obj
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/tools/%.o: tools/%.c $(SRCHDR) $(wildcard tools/*.h) include/biflow.h | $(B)/tools
	$(CC) $(CFLAGS) -I$(B)/gen -c $< -o $@
# The page of `biflow serve` is written as tools/serve_page.html and compiled in as a C string.
$(B)/tools/serve_api.o: $(B)/gen/serve_page.h
$(B)/gen/serve_page.h: tools/serve_page.html | $(B)/gen
	{ echo '/* generated from tools/serve_page.html by the Makefile: do not edit */'; \
	  echo 'static const char SERVE_PAGE[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@.tmp && mv $@.tmp $@
$(B)/tests/%.o: tests/%.c $(wildcard tests/*.h) $(SRCHDR) include/biflow.h | $(B)/tests
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libbiflow.a: $(OBJ)
	ar rcs $@ $^
$(B)/$(SONAME): $(OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(SANFLAGS) -o $@ $^ $(LDLIBS)
$(B)/libbiflow.so: $(B)/$(SONAME)
	ln -sf $(SONAME) $@
# the CLI alone serves HTTP (biflow serve): libmicrohttpd
CLI_LIBS := -lmicrohttpd -lpthread
$(CLI): $(TOOLOBJ) $(B)/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $(TOOLOBJ) $(B)/libbiflow.a $(LDLIBS) $(CLI_LIBS)
# --wrap=fsync: the tests see which files and folders the library flushes (test_reliability.c)
$(B)/test_biflow: $(TESTOBJ) $(B)/libbiflow.a
	$(CC) $(CFLAGS) -Wl,--wrap=fsync -o $@ $(TESTOBJ) $(B)/libbiflow.a $(LDLIBS)

$(B)/obj $(B)/tools $(B)/tests $(B)/gen:
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
               -D_GNU_SOURCE -Itests/fuzz/serial -Iinclude $(SRCINC)
FUZZ_LDLIBS := $(BLASLIB) -llapack -lcjson -lcrypto -lpng -ljpeg -lz -lm
FUZZSRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS   := $(FUZZSRC:tests/fuzz/%.c=build/fuzz/%)
FUZZOBJ     := $(SRC:src/%.c=build/fuzz/obj/%.o)

build/fuzz/obj/%.o: src/%.c $(SRCHDR) include/biflow.h tests/fuzz/serial/omp.h | build/fuzz/obj
	@mkdir -p $(dir $@)
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
build/make_seeds: tests/fuzz/make_seeds.c tests/jpeg_writer.c build/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $< tests/jpeg_writer.c build/libbiflow.a $(LDLIBS)

# ---------------------------------------------------------------- tests
# The fuzz harnesses run from the suite (tests/test_fuzz.c); without clang and libFuzzer
# those tests are skipped, and counted as skipped, with BF_FUZZ_SKIP giving the reason.
ifneq ($(SAN),1)
test: build/test_biflow biflow build/libbiflow.so
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
           BF_CLI=build-san/biflow BF_FUZZ_SKIP="fuzz harnesses: run by the normal suite (make test)" \
           BF_BINDING_SKIP="the Python binding and make install use the normal build: run by make test"
test: build-san/test_biflow build-san/biflow
	@rm -rf build-san/reports && mkdir -p build-san/reports
	@$(SAN_ENV) ./build-san/test_biflow; rc=$$?; \
	if [ -n "$$(ls build-san/reports)" ]; then \
	  echo "sanitizer reports (build-san/reports):"; cat build-san/reports/*; rc=1; fi; exit $$rc
endif

# ---------------------------------------------------------------- install
# make install PREFIX=DIR (default /usr/local; DESTDIR for staging): the static and shared
# library (libbiflow.so.N with the soname, the libbiflow.so link), include/biflow.h,
# biflow.pc for pkg-config, the CLI, the Python package and the shipped models. The CLI
# installed is built with BF_DATADIR, where it finds models/... when the working folder does
# not hold them. The Python package goes to PYTHONDIR: Debian's /usr/lib/python3/dist-packages
# for PREFIX=/usr, else PREFIX/lib/pythonX.Y/dist-packages (on python3's path for /usr/local).
PREFIX       ?= /usr/local
BINDIR       ?= $(PREFIX)/bin
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
DATADIR      ?= $(PREFIX)/share/biflow
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# the first python3 that has numpy (the binding needs it), else python3
PYTHON       ?= $(shell for p in python3 /usr/bin/python3; do $$p -c 'import numpy' 2>/dev/null && { echo $$p; exit; }; done; echo python3)
PYVER         = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
PYTHONDIR    ?= $(if $(filter /usr,$(PREFIX)),$(LIBDIR)/python3/dist-packages,$(LIBDIR)/python$(or $(PYVER),3)/dist-packages)

# The installed CLI: tools/cli.c again with BF_DATADIR (rebuilt when DATADIR changes).
$(B)/inst:
	mkdir -p $@
$(B)/inst/datadir.txt: FORCE | $(B)/inst
	@echo '$(DATADIR)' | cmp -s - $@ || echo '$(DATADIR)' > $@
$(B)/inst/cli.o: tools/cli.c $(wildcard tools/*.h) include/biflow.h $(B)/inst/datadir.txt
	$(CC) $(CFLAGS) -DBF_DATADIR='"$(DATADIR)"' -c $< -o $@
$(B)/inst/biflow: $(filter-out $(B)/tools/cli.o,$(TOOLOBJ)) $(B)/inst/cli.o $(B)/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) $(CLI_LIBS)

PC_SED := -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
          -e 's|@DATADIR@|$(DATADIR)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LDLIBS) $(MPILIBS)|'
PYDEST  = $(DESTDIR)$(PYTHONDIR)/biflow

install: $(B)/libbiflow.a $(B)/$(SONAME) $(B)/inst/biflow
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) \
	    $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(DATADIR)/models $(PYDEST)
	install -m 644 $(B)/libbiflow.a $(DESTDIR)$(LIBDIR)/libbiflow.a
	install -m 755 $(B)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libbiflow.so
	install -m 644 include/biflow.h $(DESTDIR)$(INCLUDEDIR)/biflow.h
	sed $(PC_SED) tools/biflow.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/biflow.pc.tmp
	mv $(DESTDIR)$(PKGCONFIGDIR)/biflow.pc.tmp $(DESTDIR)$(PKGCONFIGDIR)/biflow.pc
	install -m 755 $(B)/inst/biflow $(DESTDIR)$(BINDIR)/biflow
	install -m 644 models/*.safetensors models/README.md $(DESTDIR)$(DATADIR)/models/
	install -m 644 python/biflow/*.py $(PYDEST)/
	printf '# written by make install\nLIBRARY = "%s"\nDATADIR = "%s"\n' \
	    '$(LIBDIR)/$(SONAME)' '$(DATADIR)' > $(PYDEST)/_install.py.tmp
	mv $(PYDEST)/_install.py.tmp $(PYDEST)/_install.py
	@echo "installed into $(DESTDIR)$(PREFIX); the Python package: $(PYTHONDIR)/biflow"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/biflow $(DESTDIR)$(LIBDIR)/libbiflow.a \
	    $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libbiflow.so \
	    $(DESTDIR)$(INCLUDEDIR)/biflow.h $(DESTDIR)$(PKGCONFIGDIR)/biflow.pc
	rm -f $(addprefix $(DESTDIR)$(DATADIR)/models/,$(notdir $(wildcard models/*.safetensors)) README.md)
	-rmdir $(DESTDIR)$(DATADIR)/models $(DESTDIR)$(DATADIR) 2>/dev/null
	rm -f $(PYDEST)/*.py $(PYDEST)/__pycache__/*.pyc
	-rmdir $(PYDEST)/__pycache__ $(PYDEST) 2>/dev/null

# The install check alone: an install into a temporary prefix, a program built with
# pkg-config against it, the installed CLI and Python package, then make uninstall
# (tests/install_check.sh; also a test of the suite).
test-install: $(B)/libbiflow.a $(B)/$(SONAME)
	tests/install_check.sh

# The Python binding's tests alone (python/tests; skipped when python3 has no numpy).
test-python: $(B)/libbiflow.so biflow
	$(PYTHON) -m unittest discover -v -s python/tests -t python

clean:
	rm -rf build build-san biflow

FORCE:
.PHONY: all test clean fuzz fuzz-seeds install uninstall test-install test-python FORCE
