"""The one unpickler of user files (ADE20K index, released checkpoints): containers, numbers, strings and NumPy arrays
only; any other global is refused before it is imported, so reading a file never runs its code."""

from __future__ import annotations

import builtins
import codecs
import pickle
from collections import OrderedDict

import numpy as np

try:
    from numpy._core import multiarray, numeric
except ImportError:  # NumPy < 2
    from numpy.core import multiarray, numeric

_KINDS = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.bool_)
_DTYPE_CLASSES = sorted({type(np.dtype(kind)) for kind in _KINDS} - {np.dtype}, key=str)
NUMPY_ARRAY_GLOBALS = [multiarray._reconstruct, multiarray.scalar, numeric._frombuffer, np.ndarray, np.dtype]
NUMPY_ARRAY_GLOBALS += _DTYPE_CLASSES
# protocol 0-2 pickles name builtins `__builtin__` and store bytes as a latin-1 `_codecs.encode` call
_BUILTINS = ("set", "frozenset", "complex", "bytearray")
_ALLOWED = {(module, name): getattr(builtins, name) for module in ("builtins", "__builtin__") for name in _BUILTINS}
_ALLOWED |= {("_codecs", "encode"): codecs.encode, ("collections", "OrderedDict"): OrderedDict}
# NumPy 1 pickles name `numpy.core.*`, NumPy 2 `numpy._core.*`: NumPy's globals are matched by package and name
_ALLOWED |= {("numpy", member.__name__): member for member in NUMPY_ARRAY_GLOBALS}


class RefusedGlobalError(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (it holds more than plain data)."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        for key in ((module, name), (module.split(".")[0], name)):
            if key in _ALLOWED:
                return _ALLOWED[key]
        raise RefusedGlobalError(
            f"refused to load {module}.{name}: only plain data (containers, numbers, strings, NumPy arrays) is read"
        )


def load_plain_pickle(file):
    """Unpickle an open binary file of plain data; `RefusedGlobalError` names the first refused global."""
    return _PlainDataUnpickler(file).load()
