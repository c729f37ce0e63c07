# biflow build. `make` builds libbiflow (static and shared), the biflow CLI and the tests;
# `make test` runs the tests.
CC      ?= gcc
# Prefer OpenBLAS's OpenMP build so BLAS threads and our OpenMP threads share one pool.
BLASDIR := $(firstword $(wildcard /usr/lib/$(shell gcc -print-multiarch 2>/dev/null)/openblas-openmp) )
ARCH    ?= -march=native
OPT     ?= -O3
CFLAGS  += -std=c11 $(OPT) $(ARCH) -fopenmp -fno-math-errno -fPIC -g \
           -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -Iinclude -Isrc
comma   := ,
BLASLIB := $(if $(BLASDIR),-L$(BLASDIR) -Wl$(comma)-rpath$(comma)$(BLASDIR)) -lopenblas
LDLIBS  += $(BLASLIB) -llapack -lcjson -lcrypto -lpng -ljpeg -lz -lm -fopenmp

SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=build/obj/%.o)
TOOLSRC := $(wildcard tools/*.c)
TOOLOBJ := $(TOOLSRC:tools/%.c=build/tools/%.o)
TESTSRC := $(wildcard tests/*.c)
TESTOBJ := $(TESTSRC:tests/%.c=build/tests/%.o)

all: build/libbiflow.a build/libbiflow.so biflow build/test_biflow

build/obj/%.o: src/%.c $(wildcard src/*.h) include/biflow.h | build/obj
	$(CC) $(CFLAGS) -c $< -o $@
build/tools/%.o: tools/%.c $(wildcard src/*.h tools/*.h) include/biflow.h | build/tools
	$(CC) $(CFLAGS) -c $< -o $@
build/tests/%.o: tests/%.c $(wildcard tests/*.h src/*.h) include/biflow.h | build/tests
	$(CC) $(CFLAGS) -c $< -o $@

build/libbiflow.a: $(OBJ)
	ar rcs $@ $^
build/libbiflow.so: $(OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS)
biflow: $(TOOLOBJ) build/libbiflow.a
	$(CC) $(CFLAGS) -o $@ $(TOOLOBJ) build/libbiflow.a $(LDLIBS)
# --wrap=fsync: the tests see which files and folders the library flushes (test_reliability.c)
build/test_biflow: $(TESTOBJ) build/libbiflow.a
	$(CC) $(CFLAGS) -Wl,--wrap=fsync -o $@ $(TESTOBJ) build/libbiflow.a $(LDLIBS)

build/obj build/tools build/tests:
	mkdir -p $@

test: build/test_biflow biflow
	./build/test_biflow

clean:
	rm -rf build biflow

.PHONY: all test clean
