"""The compiled fine-histogram fold (``_fold.c``), loaded with ctypes when it was built.

``pip install`` compiles ``_fold.c`` into ``_fold.so`` next to this file (``hatch_build.py``,
with ``$CC`` or the C compiler Python was built with); without a compiler the package installs without it
and :mod:`shadowlab.drift` folds with numpy, with identical results (``tests/test_native.py``).
``SHADOWLAB_NATIVE=0`` switches the compiled fold off. ctypes releases the GIL for the call.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

ABI_VERSION = 1
LIBRARY = Path(__file__).with_name("_fold.so")

_P, _I, _D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
_GRID = [_I, _I, _I, _D, _D, _I]  # kind, exponents, mantissa bits, lo, hi, bins


def _load() -> ctypes.CDLL | None:
    if os.environ.get("SHADOWLAB_NATIVE", "1") == "0" or not LIBRARY.exists():
        return None
    try:
        lib = ctypes.CDLL(str(LIBRARY))
        lib.shadowlab_fold_abi.restype = _I
        if lib.shadowlab_fold_abi() != ABI_VERSION:  # a stale build: ignore it
            return None
    except (OSError, AttributeError):
        return None
    lib.shadowlab_bin_ids.argtypes = [_P, _I, *_GRID, _I, _P]
    lib.shadowlab_bin_ids.restype = None
    lib.shadowlab_fold.argtypes = [_P, _I, *_GRID, _P, _P, _P, _P, _P]
    lib.shadowlab_fold.restype = None
    return lib


_LIB = _load()


def available() -> bool:
    """True when the compiled fold is in use."""
    return _LIB is not None


def _f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def bin_ids(grid: tuple[int, int, int, float, float, int], x: np.ndarray, shift: int) -> np.ndarray:
    """Bin ids of ``x`` plus ``shift`` on ``grid`` (``(kind, exponents, mantissa_bits, lo, hi,
    bins)``, kind 0 dyadic, 1 equal width), as the grids' numpy ``bin_np`` computes them."""
    assert _LIB is not None
    x = _f64(x)
    out = np.empty(len(x), np.int64)
    _LIB.shadowlab_bin_ids(x.ctypes.data, len(x), *grid, shift, out.ctypes.data)
    return out


def fold(
    grid: tuple[int, int, int, float, float, int],
    x: np.ndarray,
    n: np.ndarray,
    mn: np.ndarray,
    mx: np.ndarray,
    s: np.ndarray | None,
    lefts: np.ndarray,
) -> None:
    """Add ``x`` to the per-slot counts ``n``, minima ``mn``, maxima ``mx`` and offset sums
    ``s`` (all of ``grid.bins + 3`` slots, slot = bin id - MISSING_BIN; changed in place)."""
    assert _LIB is not None
    for a, dt in ((n, np.int64), (mn, np.float64), (mx, np.float64), (lefts, np.float64)):
        assert a.dtype == dt and a.flags.c_contiguous and len(a) == grid[5] + 3
    x = _f64(x)
    _LIB.shadowlab_fold(
        x.ctypes.data,
        len(x),
        *grid,
        n.ctypes.data,
        mn.ctypes.data,
        mx.ctypes.data,
        None if s is None else s.ctypes.data,
        lefts.ctypes.data,
    )
