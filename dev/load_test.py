#!/usr/bin/env python3
"""Load test of `biflow serve` on 127.0.0.1, with Python's standard library only.

Starts the server (the rate limit off), warms it up, then sends a fixed number of sample
requests from a few client threads over keep-alive connections, for each batch size asked:
requests per second, images per second, p50/p99/max latency, errors (any answer but 200 with a
PNG, or a failed connection), and the server's resident memory (VmRSS) before and after, with
samples in between to show whether it grows. Bounded in count (--requests) and in time
(--max-seconds per batch size: the run stops early and says so).

  python3 dev/load_test.py --requests 10000 --batch 1,16 --clients 4
"""
import argparse
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def start_server(cli, threads, extra):
    log = tempfile.NamedTemporaryFile(prefix="biflow-load-", suffix=".log", delete=False)
    proc = subprocess.Popen([cli, "serve", "--port", "0", "--rate", "0", "--threads", str(threads),
                             "--max-connections", "256", *extra], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(1200):
        with open(log.name) as f:
            m = re.search(r"^biflow serve: http://127\.0\.0\.1:(\d+)/", f.read(), re.M)
        if m:
            return proc, int(m.group(1)), log.name
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    sys.exit("the server did not start:\n" + open(log.name).read())


class Client(threading.Thread):
    """Sends its share of the requests on one keep-alive connection, timing each."""

    def __init__(self, port, paths, deadline):
        super().__init__()
        self.port, self.paths, self.deadline = port, paths, deadline   # paths: (path, status)
        self.latencies, self.errors, self.first_error = [], 0, None

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        for p, want in self.paths:
            if time.time() > self.deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("GET", p)
                r = conn.getresponse()
                body = r.read()
                ok = r.status == want and (want != 200 or body[:1] in (b"\x89", b"{"))
            except (OSError, http.client.HTTPException) as e:
                ok, body = False, repr(e).encode()
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self.latencies.append(time.perf_counter() - t0)
            if not ok:
                self.errors += 1
                self.first_error = self.first_error or body[:200]
        conn.close()


# --cheap: requests that do not run the models (a test image, the JSON info, a 400, a 404), to
# put many more requests through the HTTP layer in the same time.
CHEAP = [("/api/testimage?index=%d", 200), ("/api/info", 200), ("/api/sample?n=0&seed=%d", 400),
         ("/no/such/page/%d", 404)]


def run_phase(port, pid, batch, n, clients, max_seconds, seed0, samples=5, cheap=False):
    """n requests of `batch` images over `clients` connections; RSS sampled `samples` times."""
    if cheap:
        paths = [(CHEAP[i % 4][0].replace("%d", str(i % 10000)), CHEAP[i % 4][1]) for i in range(n)]
    else:
        paths = [("/api/sample?n=%d&seed=%d&class=all&w=2" % (batch, seed0 + i), 200) for i in range(n)]
    deadline = time.time() + max_seconds
    rss = [rss_kib(pid)]
    t0 = time.perf_counter()
    done, lat, errors, first = 0, [], 0, None
    for part in range(samples):   # in parts, to sample the memory between them
        chunk = paths[part * n // samples:(part + 1) * n // samples]
        threads = [Client(port, chunk[k::clients], deadline) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in threads:
            lat += t.latencies
            errors += t.errors
            first = first or t.first_error
        rss.append(rss_kib(pid))
    wall = time.perf_counter() - t0
    return lat, errors, first, wall, rss


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cli", default="./biflow")
    p.add_argument("--requests", type=int, default=10000, help="requests per batch size")
    p.add_argument("--batch", default="1,16", help="images per request, comma-separated")
    p.add_argument("--clients", type=int, default=4, help="concurrent connections")
    p.add_argument("--warmup", type=int, default=100, help="untimed requests first, per batch size")
    p.add_argument("--max-seconds", type=float, default=900, help="time limit per batch size")
    p.add_argument("--threads", type=int, default=0, help="the server's --threads (0: all cores)")
    p.add_argument("--cheap", action="store_true", help="requests that do not run the models (see CHEAP)")
    a = p.parse_args()
    proc, port, log = start_server(a.cli, a.threads, [])
    try:
        print("biflow serve on 127.0.0.1:%d, pid %d, --threads %d; %d clients" % (port, proc.pid, a.threads, a.clients))
        for batch in [int(b) for b in a.batch.split(",")]:
            run_phase(port, proc.pid, batch, a.warmup, a.clients, a.max_seconds, 10**6, samples=1, cheap=a.cheap)
            lat, errors, first, wall, rss = run_phase(port, proc.pid, batch, a.requests, a.clients,
                                                      a.max_seconds, 0, cheap=a.cheap)
            s = sorted(lat)
            label = "cheap requests" if a.cheap else "batch %2d" % batch
            images = "" if a.cheap else ", %.1f images/s" % (batch * len(lat) / wall)
            print("%s: %d requests in %.1f s%s: %.1f requests/s%s; latency p50 %.1f ms, p99 %.1f ms, "
                  "max %.1f ms; %d errors" %
                  (label, len(lat), wall, "" if len(lat) == a.requests else " (STOPPED at the time limit)",
                   len(lat) / wall, images, 1e3 * pct(s, 0.5), 1e3 * pct(s, 0.99), 1e3 * s[-1], errors))
            print("          server RSS %s MiB (before, then after each fifth of the requests)" %
                  " -> ".join("%.1f" % (r / 1024) for r in rss))
            if first:
                print("          first error: %r" % first)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(open(log).read().strip().splitlines()[-1])
        os.unlink(log)


if __name__ == "__main__":
    main()
