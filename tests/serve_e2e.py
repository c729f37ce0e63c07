#!/usr/bin/env python3
"""End-to-end test of `biflow serve`, with Python's standard library only.

--api      the API over HTTP (urllib, http.client, socket): images for good requests, the same
           bytes for the same request whether sent alone or among concurrent ones, a 4xx status
           with a message for every kind of bad request (and the server still answering after
           them), the rate limit, and a clean stop on SIGTERM and on SIGINT.
--browser  the page in headless Chromium, driven over the DevTools protocol (a pipe, no
           websocket library): it loads, the samplers' grids and their times appear, dragging
           the guidance slider with the mouse changes the images, painting the mask changes
           the inpainting, class editing and interpolation answer, an uploaded PNG is edited
           and a PNG of the wrong size gets the server's message on the page.
           Exits 77 (skipped) when no Chromium is installed.
Both by default. Run from the repository root (tests/test_serve.c runs it from the suite).
"""
import argparse
import base64
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib

SKIP = 77
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("  FAILED: " + what, flush=True)
    return cond


# ---------------------------------------------------------------- PNG files, by hand
def png_bytes(w, h, pixel, channels=1):
    """A PNG of w x h 8-bit pixels, pixel(x, y) -> a value (grey) or a tuple (RGB)."""
    rows = bytearray()
    for y in range(h):
        rows.append(0)
        for x in range(w):
            v = pixel(x, y)
            rows.extend(v if channels > 1 else (v,))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(rows)))
            + chunk(b"IEND", b""))


def png_size(data):
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- the server
class Server:
    """`biflow serve --port 0` in the background; its output goes to a log file."""
    threads = "0"

    def __init__(self, cli, *args):
        self.log = tempfile.NamedTemporaryFile(prefix="biflow-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([cli, "serve", "--port", "0", "--threads", Server.threads, *args], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        self.port = None
        try:
            while time.time() < deadline and self.port is None and self.proc.poll() is None:
                m = re.search(r"^biflow serve: http://127\.0\.0\.1:(\d+)/", self.output(), re.M)
                self.port = int(m.group(1)) if m else None
                time.sleep(0.05)
            if self.port is None:
                raise RuntimeError("the server did not start:\n" + self.output())
        except BaseException:   # never leave a server behind
            self.close()
            raise
        self.base = "http://127.0.0.1:%d" % self.port

    def output(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        """Stops the server with sig; its exit status (None if it had to be killed)."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        out = self.output()
        os.unlink(self.log.name)
        return out


def request(base, path, body=None, method=None, headers=None, timeout=600):
    """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def error_of(body):
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- API checks
def check_info(base):
    st, h, b = request(base, "/api/info")
    info = json.loads(b) if st == 200 else {}
    check(st == 200 and h["Content-Type"] == "application/json", "/api/info answers JSON")
    check(info.get("flow", {}).get("parameters", 0) > 0 and info.get("reverse", {}).get("parameters", 0) > 0,
          "/api/info gives both models' parameter counts")
    check(len(info.get("class_names", [])) == info.get("flow", {}).get("classes"),
          "/api/info names every class")
    return info


def check_images(base, info):
    img = info["flow"]["img_size"]
    st, h, a = request(base, "/api/sample?n=4&seed=3&w=2")
    check(st == 200 and h["Content-Type"] == "image/png", "a sample is a PNG")
    check(png_size(a) == (4 * (img + 2) + 2, img + 4), "4 samples make a grid of 4 columns")
    check(float(h["X-Biflow-Ms-Per-Image"]) > 0, "a sample reports its time per image")
    check(request(base, "/api/sample?n=4&seed=3&w=2")[2] == a, "the same request gives the same bytes")
    check(request(base, "/api/sample?n=4&seed=3&w=0")[2] != a, "another guidance gives other images")
    st, h, e = request(base, "/api/sample?n=4&seed=3&w=2&sampler=exact")
    check(st == 200 and e != a, "the exact inverse answers, with other images than G's")
    for path, n in [("/api/interpolate?steps=5", 5), ("/api/interpolate?from=images&a=2&b=7&steps=3", 3),
                    ("/api/edit?index=4&to=all", info["flow"]["classes"]), ("/api/edit?index=4&to=1", 1),
                    ("/api/inpaint?index=4&mask=top-half", 1), ("/api/inpaint?index=4&mask=" + "10" * 24 + "1", 1)]:
        st, h, b = request(base, path, method="POST" if "inpaint" in path else None)
        check(st == 200 and png_size(b) == (n * (img + 2) + 2, img + 4), path + " gives %d images" % n)
    st, h, b = request(base, "/api/testimage?index=5")
    check(st == 200 and png_size(b) == (img, img) and h["X-Biflow-Label"].isdigit(), "a test image and its label")
    grey = png_bytes(img, img, lambda x, y: 255 if 8 <= x < 20 and 4 <= y < 24 else 0)
    rgb = png_bytes(img, img, lambda x, y: (200, 10, 10) if x < 14 else (0, 0, 0), channels=3)
    for name, body in [("grey", grey), ("RGB", rgb)]:
        st, h, b = request(base, "/api/edit?to=all", body=body)
        check(st == 200 and h["X-Biflow-Label"].isdigit(), "an uploaded %s PNG is edited, F names its class" % name)
        st, h, b = request(base, "/api/inpaint?mask=left-half&class=2", body=body)
        check(st == 200 and h["X-Biflow-Label"] == "2", "an uploaded %s PNG is inpainted with the class given" % name)


def check_concurrent(base):
    """Sixteen requests at once, both samplers: each the bytes it gets alone."""
    paths = ["/api/sample?n=3&seed=%d&sampler=%s" % (i % 8, "exact" if i % 2 else "biflow") for i in range(16)]
    paths += ["/api/inpaint?index=%d&seed=1" % i for i in range(4)]
    alone = {p: request(base, p, method="POST" if "inpaint" in p else None)[2] for p in set(paths)}
    got = {}

    def fetch(i, p):
        try:
            got[i] = request(base, p, method="POST" if "inpaint" in p else None)
        except OSError as e:   # a failed connection or a timeout: counted below
            got[i] = (None, None, repr(e))

    threads = [threading.Thread(target=fetch, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = sum(1 for i, p in enumerate(paths) if got[i][0] == 200 and got[i][2] == alone[p])
    check(same == len(paths), "%d concurrent requests give the bytes each gives alone (%d did)" % (len(paths), same))


BAD = [  # method, path, body, status, words in the message
    ("GET", "/api/sample?n=0", None, 400, "'n'"),
    ("GET", "/api/sample?n=100000", None, 400, "1..64"),
    ("GET", "/api/sample?w=inf", None, 400, "'w'"),
    ("GET", "/api/sample?w=nan", None, 400, "'w'"),
    ("GET", "/api/sample?w=-1", None, 400, "'w'"),
    ("GET", "/api/sample?w=2x", None, 400, "'w'"),
    ("GET", "/api/sample?temperature=1e999", None, 400, "temperature"),
    ("GET", "/api/sample?class=10", None, 400, "class"),
    ("GET", "/api/sample?class=-1", None, 400, "class"),
    ("GET", "/api/sample?seed=-5", None, 400, "seed"),
    ("GET", "/api/sample?seed=99999999999999999999999", None, 400, "seed"),
    ("GET", "/api/sample?sampler=jacobi", None, 400, "biflow, exact"),
    ("GET", "/api/sample?bogus=1", None, 400, "unknown parameter 'bogus'"),
    ("GET", "/api/sample?w=1&w=2", None, 400, "twice"),
    ("GET", "/api/sample?" + "&".join("a%d=1" % i for i in range(20)), None, 400, "too many"),
    ("GET", "/api/interpolate?steps=1", None, 400, "steps"),
    ("GET", "/api/interpolate?steps=17", None, 400, "steps"),
    ("GET", "/api/interpolate?from=images&a=10000", None, 400, "'a'"),
    ("GET", "/api/interpolate?from=images&temperature=1", None, 400, "seeds only"),
    ("GET", "/api/interpolate?from=noise", None, 400, "seeds, images"),
    ("GET", "/api/testimage?index=10000", None, 400, "index"),
    ("GET", "/api/testimage?index=-1", None, 400, "index"),
    ("GET", "/api/edit?to=12", None, 400, "'to'"),
    ("POST", "/api/inpaint?mask=0101", None, 400, "49 characters"),
    ("POST", "/api/inpaint?mask=../../etc/passwd", None, 400, "mask"),
    ("POST", "/api/inpaint?mask=models/mask.png", None, 400, "mask"),
    ("POST", "/api/inpaint?mask=random-patches", None, 400, "mask"),
    ("POST", "/api/inpaint", b"GIF89a not a png at all", 415, "not a PNG"),
    ("POST", "/api/inpaint", png_bytes(30, 30, lambda x, y: 0), 400, "30x30"),
    ("POST", "/api/edit", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0@\0\0\0@\0\x08\0\0\0\0\0\0\0\0", 400, "16384x16384"),
    ("POST", "/api/edit", png_bytes(28, 28, lambda x, y: 0)[:40], 400, "cannot be decoded"),
    ("POST", "/api/edit?index=1", png_bytes(28, 28, lambda x, y: 0), 400, "not both"),
    ("POST", "/api/inpaint", b"\0" * 100000, 413, "at most 65536"),
    ("POST", "/api/sample", b"x", 405, "GET"),
    ("DELETE", "/api/info", None, 405, "GET"),
    ("PUT", "/api/edit", b"x", 405, "GET or POST"),
    ("GET", "/api/info/../../etc/passwd", None, 404, "no such page"),
    ("GET", "/etc/passwd", None, 404, "no such page"),
    ("GET", "/models/flow-fmnist.safetensors", None, 404, "no such page"),
]


def raw_http(port, data, read=True):
    """Sends raw bytes; the status line of the answer ('' if the server closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(data)
            return s.recv(4096).decode("latin-1").split("\r\n")[0] if read else ""
        except (ConnectionError, socket.timeout):
            return ""


def check_bad_requests(base, port):
    for method, path, body, status, words in BAD:
        st, h, b = request(base, path, body=body, method=method)
        msg = error_of(b)
        check(st == status and msg is not None and words in msg,
              "%s %s: %d with a message containing %r (got %d %r)" % (method, path[:60], status, words, st, msg))
    st, h, b = request(base, "/api/info", method="DELETE")
    check(h.get("Allow") == "GET, HEAD", "a 405 says which methods are allowed")
    st, h, b = request(base, "/api/info", headers={"Host": "evil.example:%d" % port})
    check(st == 403 and "Host" in (error_of(b) or ""), "a foreign Host header is refused (DNS rebinding)")
    line = raw_http(port, b"GET /" + b"a" * 200000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    check(line == "" or " 4" in line, "a 200 kB URL is refused (%r)" % line)
    line = raw_http(port, b"HELLO\r\n\r\n")
    check(line == "" or " 400 " in line, "garbage instead of HTTP is refused (%r)" % line)
    chunk = b"%x\r\n" % 50000 + b"\0" * 50000 + b"\r\n"
    raw_http(port, b"POST /api/inpaint HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
             + chunk * 3 + b"0\r\n\r\n")
    st, h, b = request(base, "/api/info")
    check(st == 200, "the server still answers after the bad requests")


def check_rate_limit(cli):
    srv = Server(cli, "--rate", "0.5", "--burst", "3", "--data", "none:")
    try:
        codes = [request(srv.base, "/api/info")[0] for _ in range(8)]
        st, h, b = request(srv.base, "/api/info")
        check(codes[:3] == [200] * 3 and 429 in codes, "over the rate: 429 (got %s)" % codes)
        check(st == 429 and "a second" in (error_of(b) or ""), "a 429 says the rate")
        check(request(srv.base, "/")[0] == 200, "the page itself is not rate-limited")
        time.sleep(2.5)   # a token again: not 429
        st, h, b = request(srv.base, "/api/testimage")
        check(st == 503 and "test images" in (error_of(b) or ""),
              "after a while the client may send again; without test images: 503 with the reason")
        rc = srv.stop(signal.SIGINT)
        check(rc == 0 and "SIGINT" in srv.output(), "SIGINT stops the server cleanly (status %s)" % rc)
    finally:
        print(srv.close(), end="")


def api_checks(cli):
    t0 = time.time()
    srv = Server(cli)
    try:
        info = check_info(srv.base)
        if info:
            check_images(srv.base, info)
            check_concurrent(srv.base)
        check_bad_requests(srv.base, srv.port)
        rc = srv.stop()
        out = srv.output()
        check(rc == 0 and "stopped after" in out, "SIGTERM stops the server cleanly (status %s)" % rc)
    finally:
        print(srv.close(), end="")
    check_rate_limit(cli)
    print("api: %d checks failed, %.1f s" % (len(failures), time.time() - t0), flush=True)


# ---------------------------------------------------------------- the DevTools protocol
class Browser:
    """Headless Chromium with the DevTools protocol on a pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self, chromium, profile):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():   # chromium reads commands on fd 3 and writes answers on fd 4
            a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--user-data-dir=" + profile, "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage",
                "--window-size=1280,1800", "about:blank"]
        self.proc = subprocess.Popen(args, preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf, self.next_id, self.session = b"", 0, None

    def send(self, method, params=None, timeout=60, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self.receive(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    def receive(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            data = os.read(self.from_chrome, 1 << 20)
            if not data:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self.buf += data
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1500, "deviceScaleFactor": 1,
                                                          "mobile": False})
        self.send("Page.navigate", {"url": url})

    def js(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError("page script failed: %s" % r["exceptionDetails"].get("text"))
        return r["result"].get("value")

    def wait(self, expr, what, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.js(expr):
                    return True
            except RuntimeError:
                pass
            time.sleep(0.1)
        return check(False, "waited %d s for %s" % (timeout, what))

    def mouse(self, kind, x, y, buttons=1):
        self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left",
                                                "buttons": buttons, "clickCount": 1})

    def drag(self, x0, y0, x1, y1, steps=8):
        self.mouse("mouseMoved", x0, y0, 0)
        self.mouse("mousePressed", x0, y0)
        for i in range(1, steps + 1):
            self.mouse("mouseMoved", x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
            time.sleep(0.05)
        self.mouse("mouseReleased", x1, y1, 0)

    def rect(self, sel):
        return self.js("(() => { const r = document.querySelector(%s).getBoundingClientRect(); "
                       "return [r.left, r.top, r.width, r.height]; })()" % json.dumps(sel))

    def close(self):
        try:
            self.session = None
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_chrome)
        os.close(self.from_chrome)


# A hash of an <img>'s pixels, drawn to a canvas: [width, height, FNV-1a of the RGBA bytes].
HASH = """(id => { const img = document.getElementById(id), c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const x = c.getContext('2d'); x.drawImage(img, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data; let h = 2166136261;
  for (let i = 0; i < d.length; i++) { h ^= d[i]; h = Math.imul(h, 16777619) >>> 0; }
  return [c.width, c.height, h]; })"""


def counts(b):
    return b.js("JSON.stringify(bf.counts)")


def idle_after(b, key, before, what):
    return b.wait("(bf.counts.%s || 0) > %d && bf.busy === 0" % (key, before), what)


def browser_slider(b):
    before = {k: b.js(HASH + "('%s')" % k) for k in ("g-biflow", "g-exact")}
    n0 = b.js("bf.counts.sample_biflow")
    x, y, w, h = b.rect("#s-w")
    b.drag(x + w * 0.4, y + h / 2, x + w * 0.95, y + h / 2)
    check(float(b.js("document.getElementById('s-w').value")) > 4, "the guidance slider moved with the mouse")
    idle_after(b, "sample_biflow", n0, "the grid after the slider moved")
    b.wait("bf.counts.sample_exact >= 2 && bf.busy === 0", "the exact grid after the slider moved")
    for k in ("g-biflow", "g-exact"):
        after = b.js(HASH + "('%s')" % k)
        check(after[:2] == before[k][:2] and after[2] != before[k][2], "%s changed with the guidance" % k)
    check("ms/image" in b.js("document.getElementById('t-biflow').textContent + document.getElementById('t-exact').textContent"),
          "each sampler shows its time per image")


def browser_paint(b):
    mask0, result0, n0 = b.js("bf.mask.join('')"), b.js(HASH + "('p-result')"), b.js("bf.counts.inpaint")
    x, y, w, h = b.rect("#p-canvas")
    cell = w / 7   # the 7 x 7 token grid of 28 x 28 images with 4 x 4 patches
    b.drag(x + 5.5 * cell, y + 1.5 * cell, x + 5.5 * cell, y + 5.5 * cell)
    mask1 = b.js("bf.mask.join('')")
    painted = [r * 7 + 5 for r in range(1, 6)]
    check(mask0[painted[0]] == "0" and all(mask1[t] == "1" for t in painted), "painting with the mouse marks cells to keep")
    check(sum(a != c for a, c in zip(mask0, mask1)) == len(painted), "only the painted cells changed")
    idle_after(b, "inpaint", n0, "the inpainting after painting")
    check(b.js(HASH + "('p-result')")[2] != result0[2], "the inpainting changed with the mask")


def browser_edit_and_interpolate(b, tmp):
    n0, ni = b.js("bf.counts.edit"), b.js("bf.counts.interp")
    b.js("(() => { const s = document.getElementById('e-to'); s.value = '3'; s.dispatchEvent(new Event('input')); })()")
    idle_after(b, "edit", n0, "the class edit to class 3")
    check(b.js(HASH + "('e-result')")[0] == 32, "editing to one class gives one image")
    b.js("(() => { const s = document.getElementById('i-from'); s.value = 'images'; s.dispatchEvent(new Event('input')); })()")
    idle_after(b, "interp", ni, "the interpolation between test images")
    good, bad = os.path.join(tmp, "shirt.png"), os.path.join(tmp, "big.png")
    with open(good, "wb") as f:
        f.write(png_bytes(28, 28, lambda x, y: 220 if 6 <= x < 22 and 3 <= y < 26 else 0))
    with open(bad, "wb") as f:
        f.write(png_bytes(30, 30, lambda x, y: 0))
    return good, bad


def browser_upload(b, good, bad):
    node = b.send("DOM.querySelector", {"nodeId": b.send("DOM.getDocument")["root"]["nodeId"], "selector": "#x-file"})
    n0 = b.js("bf.counts.inpaint")
    b.send("DOM.setFileInputFiles", {"files": [good], "nodeId": node["nodeId"]})
    idle_after(b, "inpaint", n0, "the inpainting of an uploaded PNG")
    check("shirt.png" in b.js("document.getElementById('x-what').textContent"), "the page names the uploaded file")
    e0 = b.js("bf.errors.length")
    b.send("DOM.setFileInputFiles", {"files": [bad], "nodeId": node["nodeId"]})
    b.wait("bf.errors.length > %d && bf.busy === 0" % e0, "the server's message about a wrong-size upload")
    check("30x30" in b.js("document.getElementById('p-err').textContent"), "the page shows why the upload was refused")


def browser_session(b, base, tmp, screenshot):
    b.open(base + "/")
    b.wait("window.bf && bf.counts.sample_biflow >= 1 && bf.counts.sample_exact >= 1 && bf.counts.inpaint >= 1 "
           "&& bf.counts.edit >= 1 && bf.counts.interp >= 1 && bf.busy === 0", "the page to load and fill")
    check(b.js("bf.errors.length") == 0, "no errors on loading (%s)" % b.js("JSON.stringify(bf.errors)"))
    check("parameters" in b.js("document.getElementById('pair-table').textContent"), "the model pair's table")
    browser_slider(b)
    browser_paint(b)
    good, bad = browser_edit_and_interpolate(b, tmp)
    if screenshot:   # the default guidance and every class edit, as a first visit shows
        n0, e0 = b.js("bf.counts.sample_biflow"), b.js("bf.counts.edit")
        b.js("(() => { for (const [id, v] of [['s-w', '2'], ['e-to', 'all']]) { const s = "
             "document.getElementById(id); s.value = v; s.dispatchEvent(new Event('input')); } })()")
        idle_after(b, "sample_biflow", n0, "the grid at w = 2")
        idle_after(b, "edit", e0, "the edits to every class")
        shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print("wrote " + screenshot)
    browser_upload(b, good, bad)
    print("browser: requests per panel %s" % counts(b))


def find_chromium():
    for name in (os.environ.get("BF_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def browser_checks(cli, screenshot):
    chromium = find_chromium()
    if not chromium:
        print("SKIP: no Chromium (chromium, chromium-browser, google-chrome or $BF_CHROMIUM) is installed")
        return SKIP
    t0 = time.time()
    srv = Server(cli, "--rate", "0")
    try:
        with tempfile.TemporaryDirectory(prefix="biflow-chromium-") as tmp:
            b = Browser(chromium, os.path.join(tmp, "profile"))
            try:
                browser_session(b, srv.base, tmp, screenshot)
            finally:
                b.close()
    finally:
        srv.stop()
        print(srv.close(), end="")
    print("browser: %d checks failed, %.1f s" % (len(failures), time.time() - t0), flush=True)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cli", default="./biflow", help="the biflow binary")
    p.add_argument("--api", action="store_true", help="the API checks only")
    p.add_argument("--browser", action="store_true", help="the browser checks only")
    p.add_argument("--screenshot", help="also save a screenshot of the page here")
    p.add_argument("--threads", default=os.environ.get("BF_SERVE_THREADS", "0"),
                   help="--threads of the servers (default $BF_SERVE_THREADS or 0: all cores)")
    a = p.parse_args()
    both = not a.api and not a.browser
    Server.threads = a.threads
    rc = 0
    if a.api or both:
        api_checks(a.cli)
    if a.browser or both:
        rc = browser_checks(a.cli, a.screenshot)
    if failures:
        print("%d checks FAILED" % len(failures))
        return 1
    print("all checks passed" if rc == 0 else "skipped")
    return rc


if __name__ == "__main__":
    sys.exit(main())
