"""Loading libbiflow with ctypes: where the library is, the C prototypes and structs.

The library is found, in this order, at $BIFLOW_LIBRARY; where `make install` put it (the
_install.py it writes beside this file); in the source tree this package belongs to
(build/libbiflow.so.N); by the system's loader (libbiflow.so.N). Its ABI version and the sizes
of the structs mirrored here are checked against the library before anything else runs.

ctypes.CDLL releases the GIL for the duration of every foreign call, so other Python threads
run while the library samples, encodes or evaluates.
"""
import ctypes
import os

ABI_VERSION = 2   # BF_ABI_VERSION this binding was written for
SONAME = "libbiflow.so.%d" % ABI_VERSION

_HERE = os.path.dirname(os.path.abspath(__file__))
# the source tree: python/biflow/ -> the repository root
SOURCE_ROOT = os.path.dirname(os.path.dirname(_HERE))

try:
    from . import _install   # written by make install
except ImportError:
    _install = None


class BiflowError(RuntimeError):
    """A failure reported by libbiflow; the message is the library's (bf_last_error)."""


c_int, c_float, c_double, c_size_t, c_uint64 = (ctypes.c_int, ctypes.c_float, ctypes.c_double,
                                                 ctypes.c_size_t, ctypes.c_uint64)
c_char_p, c_void_p = ctypes.c_char_p, ctypes.c_void_p
P_float = ctypes.POINTER(ctypes.c_float)
P_int = ctypes.POINTER(ctypes.c_int)
P_uint8 = ctypes.POINTER(ctypes.c_uint8)
P_double = ctypes.POINTER(ctypes.c_double)


class FlowConfig(ctypes.Structure):
    _fields_ = [(k, c_int) for k in ("img_size", "in_channels", "patch_size", "channels",
                                      "num_blocks", "layers_per_block", "head_dim",
                                      "num_classes")] + [("bound", c_float)]


class ReverseConfig(ctypes.Structure):
    _fields_ = [(k, c_int) for k in ("img_size", "in_channels", "patch_size", "num_classes",
                                      "num_stages", "channels", "head_dim", "layers_per_stage",
                                      "denoise_layers", "guidance_embed", "w_freq", "distill")]


class FeaturesConfig(ctypes.Structure):
    _fields_ = [(k, c_int) for k in ("in_channels", "height", "width", "width1", "width2",
                                      "feat_dim", "num_classes", "arch")]


class SampleOpts(ctypes.Structure):
    _fields_ = [("sampler", c_int), ("cfg", c_float), ("cfg_anneal", c_int), ("denoise", c_int),
                ("sigma", c_float), ("jacobi_tol", c_float), ("jacobi_max_iter", c_int),
                ("batch", c_int)]


class SampleStats(ctypes.Structure):
    _fields_ = [("jacobi_iters", ctypes.c_long), ("nonfinite", ctypes.c_long),
                ("seconds", c_double)]


class ReverseSampleOpts(ctypes.Structure):
    _fields_ = [("cfg", c_float), ("cfg_two_pass", c_int), ("output", c_int), ("batch", c_int),
                ("score_flow", c_void_p), ("sigma", c_float)]


class Editor(ctypes.Structure):
    _fields_ = [("reverse", c_void_p), ("flow", c_void_p), ("flow_path", c_char_p),
                ("cfg", c_float), ("denoise", c_int), ("exact", c_int)]


class InpaintOpts(ctypes.Structure):
    _fields_ = [("iters", c_int), ("renoise", c_float), ("soft", c_float), ("candidates", c_int),
                ("encode_full", c_int), ("seed", c_uint64)]


class EditOpts(ctypes.Structure):
    _fields_ = [("strength", c_float), ("min_strength", c_float), ("verify", c_void_p)]


class ImageSet(ctypes.Structure):
    _fields_ = [("n", c_int), ("c", c_int), ("h", c_int), ("w", c_int), ("x", P_float),
                ("y", P_int)]


class Dataset(ctypes.Structure):
    _fields_ = [("n", c_int), ("c", c_int), ("h", c_int), ("w", c_int), ("pixels", P_uint8),
                ("labels", ctypes.POINTER(ctypes.c_int32)), ("num_classes", c_int),
                ("class_names", ctypes.POINTER(c_char_p))]


class FeatureStats(ctypes.Structure):
    _fields_ = [("dim", c_int), ("n", ctypes.c_long), ("mean", P_double), ("cov", P_double)]


_STRUCTS = {"flow_config": FlowConfig, "reverse_config": ReverseConfig,
            "features_config": FeaturesConfig, "sample_opts": SampleOpts,
            "sample_stats": SampleStats, "reverse_sample_opts": ReverseSampleOpts,
            "editor": Editor, "inpaint_opts": InpaintOpts, "edit_opts": EditOpts,
            "image_set": ImageSet, "dataset": Dataset,
            "feature_stats": FeatureStats}

# name: (restype, argtypes)
_PROTOTYPES = {
    "bf_abi_version": (c_int, []),
    "bf_version": (c_char_p, []),
    "bf_sizeof": (c_size_t, [c_char_p]),
    "bf_last_error": (c_char_p, []),
    "bf_set_threads": (None, [c_int]),
    "bf_get_threads": (c_int, []),
    "bf_set_precision": (c_int, [c_int]),
    "bf_get_precision": (c_int, []),
    "bf_precision_effective": (c_int, []),
    "bf_fill_normal": (None, [P_float, c_size_t, c_uint64, c_float]),
    "bf_labels_check": (c_int, [P_int, c_int, c_int]),
    "bf_images_to_u8": (None, [P_uint8, P_float, c_size_t]),
    "bf_write_image_grid": (c_int, [c_char_p, P_float, c_int, c_int, c_int, c_int, c_int, c_int]),
    "bf_flow_load": (c_void_p, [c_char_p, c_int]),
    "bf_flow_free": (None, [c_void_p]),
    "bf_flow_get_config": (ctypes.POINTER(FlowConfig), [c_void_p]),
    "bf_flow_num_params": (c_size_t, [c_void_p]),
    "bf_flow_trained_noise": (c_int, [c_void_p, P_float]),
    "bf_flow_encode": (c_int, [c_void_p, P_float, P_float, P_float, P_int, c_int]),
    "bf_flow_nll": (c_int, [c_void_p, P_float, P_float, P_int, c_int]),
    "bf_flow_decode": (c_int, [c_void_p, P_float, P_float, P_int, c_int, c_float, c_int]),
    "bf_flow_classify": (c_int, [c_void_p, P_int, P_float, c_int]),
    "bf_sample_opts_default": (None, [ctypes.POINTER(SampleOpts)]),
    "bf_flow_sample": (c_int, [c_void_p, P_float, P_float, P_int, c_int,
                               ctypes.POINTER(SampleOpts), ctypes.POINTER(SampleStats)]),
    "bf_reverse_load": (c_void_p, [c_char_p, c_int]),
    "bf_reverse_free": (None, [c_void_p]),
    "bf_reverse_get_config": (ctypes.POINTER(ReverseConfig), [c_void_p]),
    "bf_reverse_num_params": (c_size_t, [c_void_p]),
    "bf_reverse_sigma": (c_float, [c_void_p]),
    "bf_reverse_flow_path": (c_char_p, [c_void_p]),
    "bf_reverse_find_flow": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t]),
    "bf_reverse_check_flow": (c_int, [c_void_p, c_void_p, c_char_p]),
    "bf_reverse_sample_opts_default": (None, [ctypes.POINTER(ReverseSampleOpts)]),
    "bf_reverse_sample": (c_int, [c_void_p, P_float, P_float, P_int, c_int,
                                  ctypes.POINTER(ReverseSampleOpts),
                                  ctypes.POINTER(SampleStats)]),
    "bf_editor_init": (None, [ctypes.POINTER(Editor), c_void_p, c_void_p, c_char_p]),
    "bf_editor_check": (c_int, [ctypes.POINTER(Editor), c_int, c_int, c_int]),
    "bf_mask_parse_pixels": (c_int, [P_uint8, c_char_p, c_int, c_int]),
    "bf_mask_pixels": (None, [P_uint8, P_uint8, c_int, c_int]),
    "bf_inpaint_opts_default": (None, [ctypes.POINTER(InpaintOpts)]),
    "bf_inpaint": (c_int, [ctypes.POINTER(Editor), P_float, P_float, ctypes.POINTER(ImageSet),
                           P_uint8, ctypes.POINTER(InpaintOpts)]),
    "bf_edit_opts_default": (None, [ctypes.POINTER(EditOpts)]),
    "bf_edit_class": (c_int, [ctypes.POINTER(Editor), P_float, ctypes.POINTER(ImageSet), P_int,
                              c_int, ctypes.POINTER(EditOpts)]),
    "bf_reconstruct": (c_int, [ctypes.POINTER(Editor), P_float, ctypes.POINTER(ImageSet)]),
    "bf_interpolate": (c_int, [ctypes.POINTER(Editor), P_float, ctypes.POINTER(ImageSet), c_int,
                               c_int, c_int, c_int, P_double]),
    "bf_features_load": (c_void_p, [c_char_p]),
    "bf_features_free": (None, [c_void_p]),
    "bf_features_get_config": (ctypes.POINTER(FeaturesConfig), [c_void_p]),
    "bf_features_num_params": (c_size_t, [c_void_p]),
    "bf_features_dim": (c_int, [c_void_p]),
    "bf_features_extract": (c_int, [c_void_p, P_float, P_int, P_float, c_int]),
    "bf_dataset_load": (c_int, [ctypes.POINTER(Dataset), c_char_p, c_char_p]),
    "bf_dataset_free": (None, [ctypes.POINTER(Dataset)]),
    "bf_feature_stats_compute": (c_int, [ctypes.POINTER(FeatureStats), P_float, c_int, c_int]),
    "bf_feature_stats_free": (None, [ctypes.POINTER(FeatureStats)]),
    "bf_frechet_distance_stats": (c_int, [P_double, ctypes.POINTER(FeatureStats),
                                          ctypes.POINTER(FeatureStats)]),
}


def _candidates():
    env = os.environ.get("BIFLOW_LIBRARY")
    if env:
        return [env]
    out = []
    if _install is not None:
        out.append(_install.LIBRARY)
    out.append(os.path.join(SOURCE_ROOT, "build", SONAME))
    out.append(SONAME)   # the loader's search path
    return out


def _open():
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append("%s (absent)" % path)
            continue
        try:
            return ctypes.CDLL(path)   # CDLL: the GIL is released during each call
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError("biflow: cannot load libbiflow; tried: %s. Build it (make) or install it "
                      "(make install), or set BIFLOW_LIBRARY to the file" % "; ".join(tried))


def _check_abi(lib):
    lib.bf_abi_version.restype = c_int
    got = lib.bf_abi_version()
    if got != ABI_VERSION:
        raise ImportError("biflow: the library %s has ABI version %d but this binding needs %d: "
                          "rebuild or reinstall both from one source tree" % (lib._name, got,
                                                                               ABI_VERSION))
    lib.bf_sizeof.restype, lib.bf_sizeof.argtypes = c_size_t, [c_char_p]
    for name, struct in _STRUCTS.items():
        size = lib.bf_sizeof(name.encode())
        if size != ctypes.sizeof(struct):
            raise ImportError("biflow: struct bf_%s is %d bytes in %s but %d in the binding"
                              % (name, size, lib._name, ctypes.sizeof(struct)))


def _load():
    lib = _open()
    _check_abi(lib)
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


lib = _load()


_threads = None   # set_threads(): applied to the calling thread before each long call


def set_threads(n):
    """Threads of the library's calls made from now on (None or 0: the default,
    $OMP_NUM_THREADS or every core). The OpenMP setting belongs to each calling thread, so the
    binding applies it before every long call, from whichever Python thread makes it."""
    global _threads
    if n is not None and (not isinstance(n, int) or n < 0 or n > 4096):
        raise ValueError("threads must be None or an int in 0..4096 (0: the default), not %r"
                         % (n,))
    _threads = None if not n else n
    lib.bf_set_threads(_threads or 0)


def get_threads():
    """Threads the library's calls from this thread use."""
    lib.bf_set_threads(_threads or 0)
    return lib.bf_get_threads()


_PRECISIONS = ("fp32", "bf16")   # bf_precision's values, in order


def set_precision(name):
    """The matrix products of F and G from now on, process-wide: "fp32" (the library's
    default, or $BF_PRECISION) or "bf16" (bfloat16 operands, fp32 sums; a CPU without
    AVX512-BF16 computes in fp32 and says so once on stderr). The evaluation network is fp32
    whatever the setting."""
    if name not in _PRECISIONS:
        raise ValueError("precision must be 'fp32' or 'bf16', not %r" % (name,))
    check(lib.bf_set_precision(_PRECISIONS.index(name)))


def get_precision():
    """The precision the products run in: the setting, or "fp32" where the CPU cannot do
    bf16."""
    return _PRECISIONS[lib.bf_precision_effective()]


def call(fn, *args):
    """fn(*args) with the thread setting applied to the calling thread; the GIL is released
    for the duration of the call (ctypes.CDLL)."""
    lib.bf_set_threads(_threads or 0)
    return fn(*args)


def last_error():
    return lib.bf_last_error().decode("utf-8", "replace")


def check(rc):
    """Raises BiflowError with the library's message when a call returned -1."""
    if rc != 0:
        raise BiflowError(last_error())


def check_ptr(p):
    """Raises BiflowError with the library's message when a call returned NULL."""
    if not p:
        raise BiflowError(last_error())
    return p


def fspath(path):
    """A path for the library: str/bytes/PathLike to bytes."""
    return os.fsencode(os.fspath(path))


def data_dirs():
    """Folders that may hold models/ (the working folder, the source tree, the install)."""
    dirs = [os.getcwd(), SOURCE_ROOT]
    if _install is not None:
        dirs.append(_install.DATADIR)
    return dirs
