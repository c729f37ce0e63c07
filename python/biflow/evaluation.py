"""Evaluation: the feature network's features, the Frechet distance against a dataset split
and the class accuracy, as `biflow eval-features` computes them."""
import ctypes
import os
import threading

import numpy as np

from . import _arrays as A
from . import _lib
from ._handle import Handle, model_path
from ._lib import call, check, check_ptr, fspath, lib


class _Stats:
    """Gaussian statistics of a feature set (bf_feature_stats), freed with the object."""

    def __init__(self, feats):
        self.s = _lib.FeatureStats()
        n, f = feats.shape
        check(call(lib.bf_feature_stats_compute, ctypes.byref(self.s), A.fptr(feats), n, f))
        self.n = n

    def __del__(self):
        try:
            lib.bf_feature_stats_free(ctypes.byref(self.s))
        except Exception:   # interpreter shutdown
            pass


def _split_images(spec, split):
    """The images (n, C, H, W) float32 in [-1, 1] and labels (n) of a dataset split."""
    ds = _lib.Dataset()
    check(call(lib.bf_dataset_load, ctypes.byref(ds), spec.encode(), split.encode()))
    try:
        m = ds.n * ds.c * ds.h * ds.w
        pix = np.ctypeslib.as_array(ds.pixels, shape=(m,)).reshape(ds.n, ds.c, ds.h, ds.w)
        x = pix.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        y = np.ctypeslib.as_array(ds.labels, shape=(ds.n,)).astype(np.int64)
    finally:
        lib.bf_dataset_free(ctypes.byref(ds))
    return x, y


class Features(Handle):
    """The feature network of the evaluation: path is a .safetensors file or a train-features
    run folder; None: the shipped models/features-fmnist.safetensors."""

    def __init__(self, path=None):
        path = model_path("features-fmnist") if path is None else os.fspath(path)
        super().__init__(check_ptr(lib.bf_features_load(fspath(path))), lib.bf_features_free)
        self.path = path
        c = lib.bf_features_get_config(self._h).contents
        self.config = {k: getattr(c, k) for k, _ in c._fields_}
        self.image_shape = (c.in_channels, c.height, c.width)
        self.dim = int(lib.bf_features_dim(self._h))
        self.num_params = int(lib.bf_features_num_params(self._h))
        self._refs = {}

    def extract(self, images):
        """Features (n, F) float32 and predicted classes (n) int64 of images (uint8 or float in
        [-1, 1]), scored as saved: clamped and quantised to 8 bits."""
        x = A.images(images, *self.image_shape)
        n = len(x)
        feats = np.empty((n, self.dim), dtype=np.float32)
        pred = np.empty(n, dtype=np.intc)
        with self._lock:
            check(call(lib.bf_features_extract, self.handle, A.fptr(feats), A.iptr(pred),
                       A.fptr(x), n))
        return feats, pred.astype(np.int64)

    def accuracy(self, images, labels):
        """How often the network's class is the label (a float in [0, 1])."""
        _, pred = self.extract(images)
        labels = np.asarray(labels)
        if labels.shape != pred.shape or labels.dtype.kind not in "iu":
            raise ValueError("labels must be ints of the shape (%d,), not %s %s"
                             % (len(pred), labels.dtype, labels.shape))
        return float(np.mean(pred == labels)) if len(pred) else float("nan")

    def reference(self, data="fashion-mnist", split="test"):
        """The feature statistics of a dataset split (computed once per object and split)."""
        key = (data, split)
        with self._lock:
            if key not in self._refs:
                x, _ = _split_images(data, split)
                self._refs[key] = _Stats(self.extract(x)[0])
            return self._refs[key]

    def frechet_distance(self, images, data="fashion-mnist", split="test"):
        """The Frechet distance of the images' features against the split's (all its images),
        as `biflow eval-features --images` prints it. Needs n >= 2 images."""
        ref = self.reference(data, split)
        s = _Stats(self.extract(images)[0])
        fd = ctypes.c_double()
        check(call(lib.bf_frechet_distance_stats, ctypes.byref(fd), ctypes.byref(s.s),
                   ctypes.byref(ref.s)))
        return fd.value

    def close(self):
        with self._lock:
            self._refs = {}
            super().close()


_default = None
_default_lock = threading.Lock()


def _features(features):
    global _default
    if features is not None:
        return features if isinstance(features, Features) else Features(features)
    with _default_lock:
        if _default is None or _default.closed:
            _default = Features()
        return _default


def frechet_distance(images, features=None, data="fashion-mnist"):
    """FD of images against the test split of data in the feature network's features
    (features: a Features, a path, or None for the shipped network, kept for later calls)."""
    return _features(features).frechet_distance(images, data)


def class_accuracy(images, labels, features=None):
    """How often the feature network classifies the images as their labels."""
    return _features(features).accuracy(images, labels)
