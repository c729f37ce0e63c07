#!/usr/bin/env python3
"""Samples images with a BiFlow model pair and writes them as one PNG grid (a row per class).

    PYTHONPATH=python python3 python/examples/sample_grid.py --n 64 --cfg 2 --out grid.png

Defaults: the shipped reverse model (models/reverse-fmnist.safetensors), one pass of G
(--sampler biflow); --sampler exact inverts the paired forward model instead. The grid is
written by the library's PNG writer (biflow.write_grid).
"""
import argparse
import os
import sys
import time

try:
    import biflow
except ImportError:   # run from the source tree without PYTHONPATH
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import biflow


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reverse", help="reverse model G (default: the shipped one)")
    ap.add_argument("--n", type=int, default=64, help="number of images")
    ap.add_argument("--cfg", type=float, default=2.0, help="guidance weight")
    ap.add_argument("--sampler", default="biflow", choices=["biflow", "exact", "jacobi"])
    ap.add_argument("--seed", type=int, default=0, help="noise seed")
    ap.add_argument("--scale", type=int, default=2, help="grid scale-up factor")
    ap.add_argument("--threads", type=int, default=0, help="threads (0: all cores)")
    ap.add_argument("--out", default="samples.png", help="the PNG to write")
    a = ap.parse_args()
    biflow.set_threads(a.threads)
    t0 = time.perf_counter()
    with biflow.Reverse(a.reverse) as g:
        s = g.sample(a.n, cfg=a.cfg, sampler=a.sampler, seed=a.seed)
        k = g.num_classes
    ncols = -(-a.n // k) if k else None   # classes in turn: a row each
    biflow.write_grid(a.out, s.images, ncols=ncols, scale=a.scale)
    print("%d images (%s sampler, guidance %g) in %.2f s (sampling %.2f s); wrote %s"
          % (a.n, a.sampler, a.cfg, time.perf_counter() - t0, s.seconds, a.out))


if __name__ == "__main__":
    main()
