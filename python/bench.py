#!/usr/bin/env python3
"""Sampling speed of the binding against the CLI's, at batch 64, measured in one run.

    PYTHONPATH=python python3 python/bench.py [--rounds 5] [--seconds 2] [--cfg 2] [--threads N]

Each round measures, one after the other (so that a machine shared with other work slows all
three alike):
  cli      `biflow bench sample --reverse G --exact off --jacobi off`: its "biflow+cfg" case at
           batch 64 (images/s of the library's sampling calls, timed inside the library);
  binding  Reverse.sample(64, cfg=...) timed around the Python call: noise, labels, the
           arrays, ctypes and the library call;
  c-call   the library call alone through ctypes on prepared arrays (bf_reverse_sample), as
           the CLI's benchmark times it.
It prints every measurement, the medians (binding / cli is the figure of merit; 1.00: as fast
as the CLI) and the binding's own time per call, which machine load disturbs far less: the
call's time minus the seconds the library measured inside it.
"""
import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

try:
    import biflow
except ImportError:   # run from the source tree without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import biflow
from biflow import _arrays, _lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli_rate(cli, g_path, cfg, seconds):
    """images/s of the CLI benchmark's biflow+cfg case at batch 64."""
    out = subprocess.run([cli, "bench", "sample", "--reverse", g_path, "--cfg", str(cfg),
                          "--seconds", str(seconds), "--jacobi", "off", "--exact", "off",
                          "--threads", str(biflow.get_threads())], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("case") == "biflow+cfg" and d.get("batch") == 64:
                return d["images_per_s"]
    raise RuntimeError("no biflow+cfg batch 64 line in the output of %s bench sample" % cli)


def binding_rate(g, cfg, seconds, overheads):
    """images/s of Reverse.sample(64) timed around the Python call; appends to overheads the
    time of each call outside the library's sampling (the call's time minus the seconds the
    library measured: noise, labels, arrays, ctypes)."""
    g.sample(64, cfg=cfg)   # warm: the library's work memory
    images, t = 0, 0.0
    while t < seconds:
        t0 = time.perf_counter()
        s = g.sample(64, cfg=cfg, seed=images)
        dt = time.perf_counter() - t0
        overheads.append(dt - s.seconds)
        t += dt
        images += 64
    return images / t


def c_call_rate(g, cfg, seconds):
    """images/s of bf_reverse_sample alone, called through ctypes on prepared arrays."""
    z = g.noise(64, seed=5)
    y, _ = _arrays.classes("all", 64, g.num_classes)
    x = biflow.np.empty((64,) + g.image_shape, dtype=biflow.np.float32)
    o = g._opts(cfg, "auto", False, None)
    st = _lib.SampleStats()
    args = (g.handle, _arrays.fptr(x), _arrays.fptr(z), _arrays.iptr(y), 64, ctypes.byref(o),
            ctypes.byref(st))
    _lib.lib.bf_reverse_sample(*args)
    images, t = 0, 0.0
    while t < seconds:
        t0 = time.perf_counter()
        _lib.check(_lib.lib.bf_reverse_sample(*args))
        t += time.perf_counter() - t0
        images += 64
    return images / t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reverse", default=os.path.join(ROOT, "models", "reverse-fmnist.safetensors"))
    ap.add_argument("--cli", default=os.path.join(ROOT, "biflow"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=0, help="threads of both (0: all cores)")
    a = ap.parse_args()
    biflow.set_threads(a.threads)
    g = biflow.Reverse(a.reverse)
    print("bench: %s, %d threads, library %s" % (a.reverse, biflow.get_threads(),
                                                   biflow.library_path()))
    rates = {"cli": [], "binding": [], "c-call": []}
    overheads = []
    for r in range(a.rounds):
        rates["cli"].append(cli_rate(a.cli, a.reverse, a.cfg, a.seconds))
        rates["binding"].append(binding_rate(g, a.cfg, a.seconds, overheads))
        rates["c-call"].append(c_call_rate(g, a.cfg, a.seconds))
        print("round %d: cli %.1f, binding %.1f, c-call %.1f images/s (batch 64, guidance %g)"
              % (r + 1, rates["cli"][-1], rates["binding"][-1], rates["c-call"][-1], a.cfg))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print("median of %d rounds: cli %.1f, binding %.1f, c-call %.1f images/s; binding / cli "
          "%.3f, binding / c-call %.3f" % (a.rounds, med["cli"], med["binding"], med["c-call"],
                                          med["binding"] / med["cli"],
                                          med["binding"] / med["c-call"]))
    print("the binding's own time per sample(64) call (outside the library's sampling): median "
          "%.2f ms, %.2f%% of a call at the median binding rate"
          % (1e3 * statistics.median(overheads),
             100 * statistics.median(overheads) * med["binding"] / 64))


if __name__ == "__main__":
    main()
