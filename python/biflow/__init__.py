"""biflow: Bidirectional Normalizing Flows from Python, over the C library libbiflow.

    import biflow
    g = biflow.Reverse()                        # the shipped models/reverse-fmnist.safetensors
    images, labels, _ = g.sample(64, cfg=2)     # one pass of G; the same images as
                                                # `biflow sample --sampler biflow --cfg 2 --n 64`
    biflow.write_grid("grid.png", images, ncols=8)

Flow (the forward model F): encode, decode (the exact inverse), nll/log_prob/bits_per_dim,
sample (exact, jacobi), classify. Reverse (the reverse model G): sample (biflow, or exact/jacobi
through its F), reverse (one pass of G on given noise), inpaint, edit, reconstruct,
interpolate. Features, frechet_distance, class_accuracy: the evaluation. Failures of the
library raise BiflowError with its message; wrong dtypes raise TypeError, wrong shapes
ValueError. Every call releases the GIL while the library works (ctypes.CDLL). See
python/README.md.
"""
try:
    import numpy as np
except ImportError as _e:   # pragma: no cover
    raise ImportError("biflow needs numpy (Debian: apt-get install python3-numpy)") from _e

from . import _arrays
from . import _lib
from ._handle import model_path
from ._lib import ABI_VERSION, BiflowError, get_precision, get_threads, set_precision, set_threads
from .evaluation import Features, class_accuracy, frechet_distance
from .models import Flow, Reverse, Samples, noise

__all__ = ["Flow", "Reverse", "Features", "Samples", "BiflowError", "frechet_distance",
           "class_accuracy", "noise", "to_uint8", "write_grid", "model_path", "set_threads",
           "get_threads", "set_precision", "get_precision", "version", "abi_version",
           "ABI_VERSION", "library_path"]

to_uint8 = _arrays.to_uint8


def version():
    """The library's version (BF_VERSION)."""
    return _lib.lib.bf_version().decode()


def abi_version():
    """The library's ABI version (BF_ABI_VERSION, the N of libbiflow.so.N)."""
    return _lib.lib.bf_abi_version()


def library_path():
    """The file of the loaded library."""
    return _lib.lib._name


def write_grid(path, images, ncols=None, scale=2):
    """Writes images (n, C, H, W) (float in [-1, 1] or uint8; (n, H, W) for one channel) as
    one PNG grid, ncols per row (default: a square), each scaled up by scale; atomic."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or len(x) == 0:
        raise ValueError("images must have the shape (n, C, H, W) or (n, H, W) with n >= 1, "
                         "not %s" % (x.shape,))
    x = _arrays.images(x, *x.shape[1:])
    n = len(x)
    ncols = int(ncols) if ncols else int(np.ceil(np.sqrt(n)))
    _lib.check(_lib.lib.bf_write_image_grid(_lib.fspath(path), _arrays.fptr(x), n, x.shape[1],
                                            x.shape[2], x.shape[3], ncols, int(scale)))
