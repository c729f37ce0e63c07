"""Checking and converting the arrays handed to the library (C order, the library's dtypes)."""
import numbers

import numpy as np

from . import _lib


def fptr(a):
    return a.ctypes.data_as(_lib.P_float)


def iptr(a):
    return None if a is None else a.ctypes.data_as(_lib.P_int)


def u8ptr(a):
    return a.ctypes.data_as(_lib.P_uint8)


def _shape_str(shape):
    return "(" + ", ".join(str(s) for s in shape) + ")"


def images(x, c, h, w, what="images"):
    """x: uint8 pixels (n, H, W) (one channel) or (n, C, H, W), or float32/float64 in [-1, 1]
    of those shapes -> float32 (n, C, H, W), C order. uint8 p becomes p / 127.5 - 1 (as the
    CLI reads .npy files)."""
    x = np.asarray(x)
    if x.dtype not in (np.uint8, np.float32, np.float64):
        raise TypeError("%s must be uint8 pixels or float32/float64 values in [-1, 1], not %s"
                        % (what, x.dtype))
    if x.ndim == 3 and c == 1:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != (c, h, w):
        raise ValueError("%s must have the shape (n, %d, %d, %d)%s, not %s"
                         % (what, c, h, w, " or (n, %d, %d)" % (h, w) if c == 1 else "",
                            _shape_str(np.shape(x))))
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
    return np.ascontiguousarray(x, dtype=np.float32)


def tokens(z, t, d, what="z"):
    """z: float32/float64 (n, T, D) -> float32 C order."""
    z = np.asarray(z)
    if z.dtype not in (np.float32, np.float64):
        raise TypeError("%s must be float32 or float64 noise tokens, not %s" % (what, z.dtype))
    if z.ndim != 3 or z.shape[1:] != (t, d):
        raise ValueError("%s must have the shape (n, %d, %d) (tokens, values per token), not %s"
                         % (what, t, d, _shape_str(z.shape)))
    return np.ascontiguousarray(z, dtype=np.float32)


def labels(y, n, num_classes):
    """y: None (unconditional), an int (every image) or n ints -> C int array (n), checked by
    the library (bf_labels_check: in [-1, num_classes), -1 = none)."""
    if y is None:
        y = -1
    if isinstance(y, numbers.Integral):
        y = np.full(n, int(y), dtype=np.intc)
    else:
        arr = np.asarray(y)
        if arr.dtype.kind not in "iu":
            raise TypeError("labels must be integers, not %s" % arr.dtype)
        if arr.shape != (n,):
            raise ValueError("labels must have the shape (%d,) (one per image), not %s"
                             % (n, _shape_str(arr.shape)))
        y = np.ascontiguousarray(arr, dtype=np.intc)
    _lib.check(_lib.lib.bf_labels_check(iptr(y), n, num_classes))
    return y


def classes(spec, n, num_classes):
    """Labels as `biflow sample --class` makes them: 'all' (classes in turn, n / K each: the
    rows of a grid), 'none', an int, 'K1,K2,..' or a sequence of ints (cycled over the n
    images). Returns (labels (n) C int, images per class for 'all' else 0)."""
    if num_classes == 0:
        return np.full(n, -1, dtype=np.intc), 0
    if isinstance(spec, str):
        if spec == "all":
            per = (n + num_classes - 1) // num_classes
            return (np.arange(n) // per).astype(np.intc), per
        if spec == "none":
            return np.full(n, -1, dtype=np.intc), 0
        try:
            spec = [int(v) for v in spec.split(",")]
        except ValueError:
            raise ValueError("classes: '%s' is not 'all', 'none' or a list of labels in [0, %d)"
                             % (spec, num_classes)) from None
    if isinstance(spec, numbers.Integral):
        spec = [int(spec)]
    lst = np.asarray(spec).reshape(-1)
    if lst.size == 0 or lst.dtype.kind not in "iu" or lst.min() < 0 or lst.max() >= num_classes:
        raise ValueError("classes: %r is not 'all', 'none' or labels in [0, %d)"
                         % (spec, num_classes))
    return np.ascontiguousarray(np.resize(lst, n), dtype=np.intc), 0


def to_uint8(x):
    """float images in [-1, 1] -> uint8 by round((clip(x) + 1) * 127.5), as the CLI saves them
    (bf_images_to_u8)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(x.shape, dtype=np.uint8)
    _lib.lib.bf_images_to_u8(u8ptr(out), fptr(x), x.size)
    return out


def image_set(x, y):
    """A bf_image_set viewing x (n, C, H, W) float32 and y (n) C int (kept alive by the
    caller)."""
    n, c, h, w = x.shape
    return _lib.ImageSet(n, c, h, w, fptr(x), iptr(y))
