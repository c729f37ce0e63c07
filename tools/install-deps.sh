#!/usr/bin/env bash
# Installs the Debian packages that biflow builds and tests with (uses sudo when not root).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
    build-essential libopenblas-openmp-dev libopenblas-dev liblapack-dev libcjson-dev \
    libstb-dev zlib1g-dev libssl-dev dataset-fashion-mnist
