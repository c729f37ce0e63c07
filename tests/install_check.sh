#!/usr/bin/env bash
# The install check (make test-install; also the suite's install_with_pkg_config test):
# make install into a temporary prefix; a C program built only with pkg-config against it
# (tests/install/consumer.c), run from outside the source tree; the installed CLI, which finds
# the installed models for models/... paths; the installed Python package (when a python3 has
# numpy), whose samples must be the installed CLI's; then make uninstall, which must leave no
# file behind.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tmp=$(mktemp -d "${TMPDIR:-/tmp}/biflow-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
# a make of its own: not the jobserver or the variables of a make that runs the suite
unset MAKEFLAGS MFLAGS MAKELEVEL
if ! make --no-print-directory install PREFIX="$prefix" >"$tmp/install.log" 2>&1; then
    cat "$tmp/install.log"; exit 1
fi
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
abi=$(sed -n 's/^#define BF_ABI_VERSION \([0-9]*\).*/\1/p' include/biflow.h)
soname=$(readelf -d "$prefix/lib/libbiflow.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
echo "installed: pkg-config biflow $(pkg-config --modversion biflow), soname $soname"
[ "$soname" = "libbiflow.so.$abi" ] || { echo "soname '$soname', expected libbiflow.so.$abi"; exit 1; }
[ "$(readlink "$prefix/lib/libbiflow.so")" = "libbiflow.so.$abi" ]
${CC:-cc} -std=c11 -Wall -Wextra -Werror tests/install/consumer.c -o "$tmp/consumer" \
    $(pkg-config --cflags --libs biflow)

cd "$tmp"   # outside the source tree from here on
LD_LIBRARY_PATH="$prefix/lib" ./consumer "$prefix/share/biflow/models/reverse-fmnist.safetensors"
"$prefix/bin/biflow" sample --sampler biflow --reverse models/reverse-fmnist.safetensors --n 4 \
    --cfg 2 --seed 1 --out cli >/dev/null
python=""
for p in "${BF_PYTHON:-}" python3 /usr/bin/python3; do
    if [ -n "$p" ] && "$p" -c 'import numpy' 2>/dev/null; then python=$p; break; fi
done
if [ -n "$python" ]; then
    site=$(dirname "$(dirname "$(find "$prefix" -path '*/biflow/__init__.py')")")
    PYTHONPATH="$site" "$python" -c "
import biflow, numpy as np
assert biflow.library_path() == '$prefix/lib/libbiflow.so.$abi', biflow.library_path()
s = biflow.Reverse().sample(4, cfg=2, seed=1, dtype='uint8')
assert np.array_equal(s.images, np.load('cli.npy')), 'the installed binding and CLI differ'
print('installed Python package: %s, the CLI\'s samples' % biflow.__file__)"
else
    echo "installed Python package not tried: no python3 with numpy"
fi
cd "$root"
make --no-print-directory uninstall PREFIX="$prefix" >"$tmp/uninstall.log" 2>&1
left=$(find "$prefix" -type f)
[ -z "$left" ] || { echo "make uninstall left: $left"; exit 1; }
echo "make uninstall removed every file"
