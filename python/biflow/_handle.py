"""What every model object shares: the library handle, its lock, closing, shipped models."""
import os
import threading

from . import _lib


def model_path(name):
    """The path of a shipped model: a file name in models/ ('reverse-fmnist.safetensors') or
    its stem ('reverse-fmnist'), looked for in ./models, the source tree's models/ and the
    installed PREFIX/share/biflow/models, in that order."""
    if not name.endswith(".safetensors"):
        name += ".safetensors"
    tried = []
    for d in _lib.data_dirs():
        p = os.path.join(d, "models", name)
        if os.path.exists(p):
            return p
        tried.append(p)
    raise FileNotFoundError("no shipped model %s; looked in: %s" % (name, ", ".join(tried)))


class Handle:
    """An object owning a library handle: closed by close(), by leaving a `with` block or when
    collected. Calls on one object are serialised by its lock (the library lets one thread
    at a time use a handle); different objects run in parallel, the GIL released."""

    def __init__(self, handle, free):
        self._h = handle
        self._free = free
        self._lock = threading.RLock()

    @property
    def handle(self):
        if not self._h:
            raise ValueError("this %s is closed" % type(self).__name__)
        return self._h

    @property
    def closed(self):
        return not self._h

    def close(self):
        """Releases the model's memory; the object cannot be used afterwards."""
        with self._lock:
            if self._h:
                self._free(self._h)
                self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:   # interpreter shutdown: the library may be gone already
            pass
