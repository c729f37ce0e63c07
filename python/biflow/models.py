"""The forward model F (Flow, a TARFlow) and the reverse model G (Reverse), over libbiflow.

Images are (n, C, H, W): float32 in [-1, 1] or uint8 pixels on input (uint8 (n, H, W) too for
one channel); float32 on output, as the model gives them (not clipped), or uint8 as the CLI
saves them with dtype="uint8". Noise tokens are float32 (n, T, D). Labels are ints, -1 for
none (the null class).
"""
import collections
import ctypes
import math
import numbers
import os

import numpy as np

from . import _arrays as A
from . import _lib
from ._handle import Handle, model_path
from ._lib import BiflowError, call, check, check_ptr, fspath, lib

Samples = collections.namedtuple("Samples", "images labels seconds")
Samples.__doc__ = ("Sampled images (n, C, H, W) (float32, or uint8 with dtype='uint8'), their "
                   "labels (n) int64, and the seconds the library's sampling call took.")

_SAMPLERS = {"exact": 0, "jacobi": 1}


def _count(n):
    if not isinstance(n, numbers.Integral) or n < 0 or n > 1000000:
        raise ValueError("n must be an int in 0..1000000, not %r" % (n,))
    return int(n)


def _weight(cfg, what="cfg"):
    cfg = float(cfg)
    if not (math.isfinite(cfg) and cfg >= 0):
        raise ValueError("%s (the guidance weight) must be a finite number >= 0, not %r"
                         % (what, cfg))
    return cfg


def _output(x, dtype):
    if dtype in ("float32", np.float32):
        return x
    if dtype in ("uint8", np.uint8):
        return A.to_uint8(x)
    raise ValueError("dtype must be 'float32' or 'uint8', not %r" % (dtype,))


def noise(n, token_shape, seed=0, temperature=1.0):
    """The prior noise of `biflow sample --seed SEED --temperature T`: (n, T, D) float32."""
    n = _count(n)
    if not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 64:
        raise ValueError("seed must be an int in [0, 2**64), not %r" % (seed,))
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError("temperature must be a finite number >= 0, not %r" % (temperature,))
    z = np.empty((n,) + tuple(token_shape), dtype=np.float32)
    lib.bf_fill_normal(A.fptr(z), z.size, int(seed), temperature)
    return z


class _Model(Handle):
    """Shapes shared by F and G, from a config with img_size, in_channels, patch_size."""

    def _shapes(self, c):
        self.config = {k: getattr(c, k) for k, _ in c._fields_}
        g = c.img_size // c.patch_size
        self.image_shape = (c.in_channels, c.img_size, c.img_size)
        self.token_shape = (g * g, c.in_channels * c.patch_size ** 2)
        self.num_classes = c.num_classes

    def noise(self, n, seed=0, temperature=1.0):
        """Prior noise (n, T, D) float32, as `biflow sample --seed --temperature` draws it."""
        return noise(n, self.token_shape, seed, temperature)

    def _images(self, x, what="images"):
        return A.images(x, *self.image_shape, what=what)

    def _labels(self, y, n):
        return A.labels(y, n, self.num_classes)

    def __repr__(self):
        state = "closed" if self.closed else "%d parameters" % self.num_params
        return "%s(%r, %s)" % (type(self).__name__, self.path, state)


class Flow(_Model):
    """The forward model F (a TARFlow): path is a .safetensors file or a training run's folder
    (its EMA weights unless ema=False); None: the shipped models/flow-fmnist.safetensors."""

    def __init__(self, path=None, ema=True):
        path = model_path("flow-fmnist") if path is None else os.fspath(path)
        super().__init__(check_ptr(lib.bf_flow_load(fspath(path), int(bool(ema)))),
                         lib.bf_flow_free)
        self.path = path
        self._shapes(lib.bf_flow_get_config(self._h).contents)
        self.num_params = int(lib.bf_flow_num_params(self._h))
        s = ctypes.c_float()
        self.trained_gauss = bool(lib.bf_flow_trained_noise(self._h, ctypes.byref(s)))
        self.sigma = float(s.value)   # training noise level (0: uniform or not recorded)

    def encode(self, x, y=None):
        """z = F(x | y): returns (z (n, T, D) float32, logdet (n) float32: the sum over blocks
        of -mean(alpha), per dimension)."""
        x = self._images(x)
        n = len(x)
        y = self._labels(y, n)
        z = np.empty((n,) + self.token_shape, dtype=np.float32)
        logdet = np.empty(n, dtype=np.float32)
        with self._lock:
            check(call(lib.bf_flow_encode, self.handle, A.fptr(z), A.fptr(logdet), A.fptr(x),
                       A.iptr(y), n))
        return z, logdet

    def nll(self, x, y=None):
        """-log p(x | y) / (C H W) in nats per image (n) float32, x taken as given."""
        x = self._images(x)
        n = len(x)
        y = self._labels(y, n)
        out = np.empty(n, dtype=np.float32)
        with self._lock:
            check(call(lib.bf_flow_nll, self.handle, A.fptr(out), A.fptr(x), A.iptr(y), n))
        return out

    def log_prob(self, x, y=None):
        """log p(x | y) in nats per image (n) float64: the density of x in [-1, 1]^(C H W)."""
        return -self.nll(x, y).astype(np.float64) * float(np.prod(self.image_shape))

    def bits_per_dim(self, x, y=None, seed=0):
        """Bits per dimension of each image (n) float64, as `biflow eval-bpd` counts them:
        (nll + ln 128) / ln 2. uint8 pixels p are dequantised first, x = (p + u) / 128 - 1 with
        u uniform in [0, 1) drawn from seed; float images are taken as dequantised already."""
        arr = np.asarray(x)
        if arr.dtype == np.uint8:
            x = self._images(arr)   # checks the shape
            p = (x + np.float32(1.0)) * np.float32(127.5)
            u = np.random.default_rng(seed).random(p.shape, dtype=np.float32)
            x = (p + u) / np.float32(128.0) - np.float32(1.0)
        nll = self.nll(x, y).astype(np.float64)
        return (nll + math.log(128.0)) / math.log(2.0)

    def decode(self, z, y=None, cfg=0.0, cfg_anneal=False):
        """The exact inverse x = F^-1(z | y) (sequential over tokens), guidance cfg:
        images (n, C, H, W) float32."""
        z = A.tokens(z, *self.token_shape)
        n = len(z)
        y = self._labels(y, n)
        x = np.empty((n,) + self.image_shape, dtype=np.float32)
        with self._lock:
            check(call(lib.bf_flow_decode, self.handle, A.fptr(x), A.fptr(z), A.iptr(y), n,
                       _weight(cfg), int(bool(cfg_anneal))))
        return x

    def classify(self, x):
        """The label under which F finds each image likeliest (n) int64 (-1: unconditional)."""
        x = self._images(x)
        y = np.empty(len(x), dtype=np.intc)
        with self._lock:
            check(call(lib.bf_flow_classify, self.handle, A.iptr(y), A.fptr(x), len(x)))
        return y.astype(np.int64)

    def _denoise(self, denoise, sigma):
        if denoise not in ("auto", "score", "none"):
            raise ValueError("denoise must be 'auto', 'score' or 'none' for this sampler, not %r"
                             % (denoise,))
        on = self.trained_gauss if denoise == "auto" else denoise == "score"
        sigma = self.sigma if sigma is None or sigma < 0 else float(sigma)
        if on and not sigma > 0:
            raise ValueError("score denoising needs sigma (the model does not record one)")
        return int(on), sigma

    def sample(self, n=64, classes="all", cfg=0.0, sampler="exact", denoise="auto", sigma=None,
               seed=0, temperature=1.0, batch=None, cfg_anneal=False, jacobi_tol=None,
               jacobi_max_iter=None, dtype="float32"):
        """Samples by inverting F, as `biflow sample --flow ...` with the same options (and the
        same images for the same seed): sampler 'exact' (cached causal decoding) or 'jacobi';
        classes 'all' (classes in turn), 'none', K or a list; denoise 'auto' (score denoising
        when F was trained with Gaussian noise), 'score' or 'none'. Returns Samples."""
        if sampler not in _SAMPLERS:
            raise ValueError("Flow.sample: sampler must be 'exact' or 'jacobi', not %r (the "
                             "one-pass sampler 'biflow' is Reverse.sample)" % (sampler,))
        n = _count(n)
        y, _ = A.classes(classes, n, self.num_classes)
        o = _lib.SampleOpts()
        lib.bf_sample_opts_default(ctypes.byref(o))
        o.sampler, o.cfg, o.cfg_anneal = _SAMPLERS[sampler], _weight(cfg), int(bool(cfg_anneal))
        o.denoise, o.sigma = self._denoise(denoise, sigma)
        if batch is not None:
            o.batch = int(batch)
        if jacobi_tol is not None:
            o.jacobi_tol = float(jacobi_tol)
        if jacobi_max_iter is not None:
            o.jacobi_max_iter = int(jacobi_max_iter)
        z = self.noise(n, seed, temperature)
        x = np.empty((n,) + self.image_shape, dtype=np.float32)
        st = _lib.SampleStats()
        with self._lock:
            check(call(lib.bf_flow_sample, self.handle, A.fptr(x), A.fptr(z), A.iptr(y), n,
                       ctypes.byref(o), ctypes.byref(st)))
        return Samples(_output(x, dtype), y.astype(np.int64), st.seconds)


class Reverse(_Model):
    """The reverse model G: path is a .safetensors file or a run folder (EMA weights unless
    ema=False); None: the shipped models/reverse-fmnist.safetensors. flow: the forward model G
    was trained against (a Flow, or a path; checked by SHA-256, a mismatch raises
    BiflowError); None: the one G records, looked for beside G too, loaded when first needed
    (score denoising, exact sampling, encoding and editing)."""

    def __init__(self, path=None, flow=None, ema=True):
        path = model_path("reverse-fmnist") if path is None else os.fspath(path)
        super().__init__(check_ptr(lib.bf_reverse_load(fspath(path), int(bool(ema)))),
                         lib.bf_reverse_free)
        self.path = path
        c = lib.bf_reverse_get_config(self._h).contents
        self._shapes(c)
        self.denoise_layers = c.denoise_layers
        self.num_params = int(lib.bf_reverse_num_params(self._h))
        self.sigma = float(lib.bf_reverse_sigma(self._h))
        self._flow, self._owns_flow = None, False
        if flow is not None:
            try:
                self._flow = self._pair(flow)
            except BaseException:
                self.close()
                raise

    def _pair(self, flow):
        owns = not isinstance(flow, Flow)
        if flow is None:
            buf = ctypes.create_string_buffer(4096)
            check(lib.bf_reverse_find_flow(self.handle, fspath(self.path), buf, len(buf)))
            flow = os.fsdecode(buf.value)
        f = Flow(flow) if owns else flow
        if lib.bf_reverse_check_flow(self.handle, f.handle, fspath(f.path)) != 0:
            err = _lib.last_error()
            if owns:
                f.close()
            raise BiflowError(err)
        self._owns_flow = owns
        return f

    @property
    def flow(self):
        """The paired forward model (a Flow), loaded and checked on first use."""
        with self._lock:
            if self._flow is None:
                self._flow = self._pair(None)
            return self._flow

    def close(self):
        with self._lock:
            if self._owns_flow and self._flow is not None:
                self._flow.close()
            self._flow = None
            super().close()

    def _opts(self, cfg, denoise, cfg_two_pass, sigma):
        o = _lib.ReverseSampleOpts()
        lib.bf_reverse_sample_opts_default(ctypes.byref(o))
        o.cfg, o.cfg_two_pass = _weight(cfg), int(bool(cfg_two_pass))
        if denoise not in ("auto", "learned", "score", "none"):
            raise ValueError("denoise must be 'auto', 'learned', 'score' or 'none', not %r"
                             % (denoise,))
        clean = denoise == "learned" or (denoise == "auto" and self.denoise_layers > 0)
        o.output = 0 if clean else 1   # BF_REVERSE_OUT_CLEAN, BF_REVERSE_OUT_NOISY
        if denoise == "score":
            o.score_flow = self.flow.handle
            o.sigma = self.sigma if sigma is None or sigma < 0 else float(sigma)
            if not o.sigma > 0:
                raise ValueError("score denoising needs sigma (the model does not record one)")
        return o

    def _run(self, z, y, o):
        n = len(z)
        x = np.empty((n,) + self.image_shape, dtype=np.float32)
        st = _lib.SampleStats()
        flow_lock = self._flow._lock if o.score_flow else self._lock
        with self._lock, flow_lock:
            check(call(lib.bf_reverse_sample, self.handle, A.fptr(x), A.fptr(z), A.iptr(y), n,
                       ctypes.byref(o), ctypes.byref(st)))
        return x, st.seconds

    def reverse(self, z, y=None, cfg=0.0, denoise="auto", cfg_two_pass=False, sigma=None):
        """One pass of G: x = G(z | y) with guidance cfg (an input of G when it was trained
        with guidance: 1 NFE; else or with cfg_two_pass, 2 NFE). denoise: 'auto' (G's learned
        denoising when it has the stage), 'learned', 'none' (its noisy-data estimate) or 'score'
        (score denoising with F). Images (n, C, H, W) float32."""
        z = A.tokens(z, *self.token_shape)
        y = self._labels(y, len(z))
        return self._run(z, y, self._opts(cfg, denoise, cfg_two_pass, sigma))[0]

    def sample(self, n=64, classes="all", cfg=0.0, sampler="biflow", denoise="auto", sigma=None,
               seed=0, temperature=1.0, cfg_two_pass=False, dtype="float32", **flow_options):
        """Samples as `biflow sample` does with the same options (the same images for the same
        seed): sampler 'biflow' (one pass of G) or 'exact'/'jacobi' (inverting the paired F,
        Flow.sample, which takes flow_options such as batch and cfg_anneal). Returns Samples."""
        if sampler in _SAMPLERS:
            return self.flow.sample(n, classes, cfg, sampler, denoise, sigma, seed, temperature,
                                    dtype=dtype, **flow_options)
        if sampler != "biflow":
            raise ValueError("sampler must be 'biflow', 'exact' or 'jacobi', not %r" % (sampler,))
        if flow_options:
            raise TypeError("options %s belong to the exact and jacobi samplers (Flow.sample), "
                            "not to the biflow sampler" % sorted(flow_options))
        n = _count(n)
        y, _ = A.classes(classes, n, self.num_classes)
        o = self._opts(cfg, denoise, cfg_two_pass, sigma)
        x, seconds = self._run(self.noise(n, seed, temperature), y, o)
        return Samples(_output(x, dtype), y.astype(np.int64), seconds)

    # ------------------------------------------------------------ editing (METHOD Section 9)
    def encode(self, x, y=None):
        """F(x | y) with the paired F: (z, logdet)."""
        return self.flow.encode(x, y)

    def decode(self, z, y=None, cfg=0.0, cfg_anneal=False):
        """The exact inverse of the paired F (Flow.decode)."""
        return self.flow.decode(z, y, cfg, cfg_anneal)

    def _editor(self, cfg, denoise):
        if denoise not in ("auto", "learned", "none"):
            raise ValueError("denoise must be 'auto', 'learned' or 'none', not %r" % (denoise,))
        f = self.flow
        e = _lib.Editor()
        path = fspath(f.path)
        lib.bf_editor_init(ctypes.byref(e), self.handle, f.handle, path)
        e.flow_path = path   # kept alive by e (the C struct only points to it)
        e.cfg = _weight(cfg)
        if denoise != "auto":
            e.denoise = int(denoise == "learned")
        check(lib.bf_editor_check(ctypes.byref(e), *self.image_shape))
        return e

    def _edit_inputs(self, x, y):
        """Images and labels of an edit: y None takes, for a conditional model, the class
        under which F finds each image likeliest (the CLI's --class auto)."""
        x = self._images(x)
        if y is None and self.num_classes:
            y = self.flow.classify(x)
        return x, self._labels(y, len(x))

    def _edit_call(self, fn, out, *args):
        with self._lock, self.flow._lock:
            check(call(fn, *args))
        return out

    def _pixel_mask(self, mask):
        """The known region as a pixel mask (H, W) of 0/1 bytes."""
        t, img, p = self.token_shape[0], self.image_shape[1], self.config["patch_size"]
        pix = np.empty((img, img), dtype=np.uint8)
        if isinstance(mask, (str, os.PathLike)):
            check(lib.bf_mask_parse_pixels(A.u8ptr(pix), fspath(mask), img, p))
            return pix
        arr = np.asarray(mask)
        if arr.shape == (t,):
            tokens = np.ascontiguousarray(arr != 0, dtype=np.uint8)
            lib.bf_mask_pixels(A.u8ptr(pix), A.u8ptr(tokens), img, p)
        elif arr.shape == (img, img):
            pix[:] = arr != 0
        else:
            raise ValueError("mask must be a name (left-half, center, random-patches:0.5, ...), "
                             "a PNG path, or an array of shape (%d,) (tokens) or (%d, %d) "
                             "(pixels), non-zero = known; not %s" % (t, img, img, arr.shape))
        return pix

    def inpaint(self, x, mask, y=None, cfg=0.0, denoise="auto", encode_full=False, seed=0,
                iters=None, candidates=None, renoise=None, soft=None, exact=False):
        """Inpainting as `biflow inpaint`: x' = G(M F(x | y) + (1 - M) eps | y), then `iters`
        rounds (default 3) of pasting the known pixels back, re-encoding and decoding the
        best of `candidates` noise draws (default 4); the known pixels of the result are the
        input's. mask names the KNOWN region: as --mask (left-half, right-half, top-half,
        bottom-half, center, border, random-patches[:FRACTION[:SEED]], a PNG path), or an
        array: (T) per token or (H, W) per pixel, non-zero = known. F sees the unknown region
        grey unless encode_full; exact decodes with F's exact inverse. Images (n, C, H, W)."""
        x, y = self._edit_inputs(x, y)
        pix = self._pixel_mask(mask)
        o = _lib.InpaintOpts()
        lib.bf_inpaint_opts_default(ctypes.byref(o))
        for name, v in (("iters", iters), ("candidates", candidates)):
            if v is not None:
                setattr(o, name, int(v))
        for name, v in (("renoise", renoise), ("soft", soft)):
            if v is not None:
                setattr(o, name, float(v))
        o.encode_full, o.seed = int(bool(encode_full)), int(seed)
        e, s = self._editor(cfg, denoise), A.image_set(x, y)
        e.exact = int(bool(exact))
        out = np.empty_like(x)
        return self._edit_call(lib.bf_inpaint, out, ctypes.byref(e), A.fptr(out), None,
                               ctypes.byref(s), A.u8ptr(pix), ctypes.byref(o))

    def edit(self, x, to, y=None, cfg=0.0, denoise="auto", strength=1.0, verify=None,
             min_strength=1.0, exact=False):
        """Class editing: x' = G(z | t) for each target t of `to` (an int, a list, or 'all'),
        z = F(x | t) + strength (F(x | y) - F(x | t)) (`biflow edit --strength`: 1 decodes
        F(x | y) as t, lower keeps more, above 1 edits again). verify: a Features network
        (not the evaluation one): each edit takes the gentlest strength of min_strength,
        min_strength + 0.25, ..., strength it reads as the target. Images (n, k, C, H, W)
        float32, image i's k edits in row i."""
        x, y = self._edit_inputs(x, y)
        if isinstance(to, str) and to == "all":
            to = list(range(self.num_classes))
        t = np.atleast_1d(np.asarray(to))
        if t.ndim != 1 or t.dtype.kind not in "iu":
            raise TypeError("to must be an int, a list of ints or 'all', not %r" % (to,))
        t = np.ascontiguousarray(t, dtype=np.intc)
        o = _lib.EditOpts()
        lib.bf_edit_opts_default(ctypes.byref(o))
        o.strength, o.min_strength = float(strength), float(min_strength)
        o.verify = verify._h if verify is not None else None
        e, s = self._editor(cfg, denoise), A.image_set(x, y)
        e.exact = int(bool(exact))
        out = np.empty((len(x), len(t)) + self.image_shape, dtype=np.float32)
        return self._edit_call(lib.bf_edit_class, out, ctypes.byref(e), A.fptr(out),
                               ctypes.byref(s), A.iptr(t), len(t), ctypes.byref(o))

    def reconstruct(self, x, y=None, cfg=0.0, denoise="auto"):
        """G(F(x | y) | y): images (n, C, H, W) float32."""
        x, y = self._edit_inputs(x, y)
        e, s = self._editor(cfg, denoise), A.image_set(x, y)
        out = np.empty_like(x)
        return self._edit_call(lib.bf_reconstruct, out, ctypes.byref(e), A.fptr(out),
                               ctypes.byref(s))

    def interpolate(self, a, b, y=None, steps=8, cfg=0.0, denoise="auto"):
        """G(slerp(F(a | y), F(b | y), t) | y) for t = 0 .. 1 in `steps` steps; a and b are
        single images (C, H, W) (or (H, W)); y None: the class F finds likeliest for a.
        Images (steps, C, H, W) float32."""
        steps = int(steps)
        if steps < 2:
            raise ValueError("steps must be >= 2, not %d" % steps)
        x = np.stack([np.asarray(a), np.asarray(b)])
        x, ys = self._edit_inputs(x, None if y is None else [y, y])
        e, s = self._editor(cfg, denoise), A.image_set(x, ys)
        out = np.empty((int(steps),) + self.image_shape, dtype=np.float32)
        angle = ctypes.c_double()
        return self._edit_call(lib.bf_interpolate, out, ctypes.byref(e), A.fptr(out),
                               ctypes.byref(s), 0, 1, int(ys[0]), steps, ctypes.byref(angle))
