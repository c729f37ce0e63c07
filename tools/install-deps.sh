#!/usr/bin/env bash
# Installs the Debian packages that biflow builds and tests with (uses sudo when not root).
# libpng-dev and libjpeg-dev (libjpeg62-turbo-dev) decode images; libstb-dev is used only for
# stb_image_write. clang and libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) build
# the fuzz harnesses that `make test` runs briefly (skipped, and counted, without them).
# python3-numpy is the Python binding's only dependency (python/; its tests are skipped without
# it); pkgconf provides pkg-config, with which the install check builds a program.
# libopenmpi-dev and openmpi-bin: data-parallel training under mpirun (`make` builds with MPI
# when mpicc is present; the MPI tests are skipped, and counted, without mpirun).
# libmicrohttpd-dev serves HTTP (biflow serve); chromium runs its end-to-end test in a headless
# browser (tests/serve_e2e.py, with python3's standard library; skipped and counted without it).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    build-essential libopenblas-openmp-dev libopenblas-dev liblapack-dev libcjson-dev \
    libstb-dev libpng-dev libjpeg-dev zlib1g-dev libssl-dev dataset-fashion-mnist \
    clang libclang-rt-14-dev python3 python3-numpy pkgconf libopenmpi-dev openmpi-bin \
    libmicrohttpd-dev chromium
