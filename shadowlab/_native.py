"""The compiled fine-histogram fold (``_fold.c``), loaded with ctypes when it was built.

``pip install`` compiles ``_fold.c`` into ``_fold.so`` next to this file (``hatch_build.py``,
with ``$CC`` or the C compiler Python was built with); without a compiler the package installs without it
and :mod:`shadowlab.drift` folds with numpy, with identical results (``tests/test_native.py``).
``SHADOWLAB_NATIVE=0`` switches the compiled fold off. ctypes releases the GIL for the call.
The same library holds the first histogram of :func:`shadowlab.thresholds.calibrate_threshold`
(:class:`HourHistogram`; a polars group-by without it).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

ABI_VERSION = 2
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
    lib.shadowlab_hhist_new.argtypes = [_I, _I]
    lib.shadowlab_hhist_new.restype = _P
    lib.shadowlab_hhist_free.argtypes = [_P]
    lib.shadowlab_hhist_free.restype = None
    lib.shadowlab_hhist_add.argtypes = [_P, _P, _P, _P, _P, _P, _I, _D, _I, _I, _D, _P, _P]
    lib.shadowlab_hhist_add.restype = _I
    lib.shadowlab_hhist_size.argtypes = [_P]
    lib.shadowlab_hhist_size.restype = _I
    lib.shadowlab_hhist_export.argtypes = [_P, _P, _P, _P, _P, _P, _P, _P]
    lib.shadowlab_hhist_export.restype = None
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


NULL_US = np.iinfo(np.int64).min
"""The timestamp that stands for a null one in :class:`HourHistogram` (year -292 277)."""


class SegmentCollision(RuntimeError):
    """Two segment values had the same first hash but not the same second one."""


class TooSparse(RuntimeError):
    """The dense cells would exceed their bound (very many sparse segments)."""


class HourHistogram:
    """The cells of :func:`shadowlab.thresholds._hist_agg` (hour, v1 flag, candidate bin,
    segment) accumulated by ``_fold.c``: rows, min and max of the finite candidate scores, how
    many reach ``t1``; dense per (hour, segment), at most ``max_cells`` cells.

    Segments are given as two 64-bit hashes of their values (different seeds); the first
    numbers them in order of first appearance, the second must agree on every row of a number
    (else :class:`SegmentCollision`). :meth:`add` returns each row's number and the rows where
    new numbers first appeared (the caller keeps their values)."""

    def __init__(
        self, t1: float, inclusive: bool, nbins: int, scale: float, max_cells: int = 1 << 24
    ) -> None:
        assert _LIB is not None
        self._args = (float(t1), int(bool(inclusive)), int(nbins), float(scale))
        self._h = _LIB.shadowlab_hhist_new(int(nbins), int(max_cells))
        if not self._h:
            raise MemoryError("shadowlab: no memory for the calibration histogram")

    def add(
        self, us: np.ndarray, p: np.ndarray, c: np.ndarray, seg: np.ndarray, check: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add rows (epoch microseconds, NULL_US for none; both scores, NaN for none; the two
        segment hashes); returns (segment number per row, rows where new numbers appeared)."""
        assert self._h, "closed"
        us = np.ascontiguousarray(us, dtype=np.int64)
        p, c = _f64(p), _f64(c)
        seg = np.ascontiguousarray(seg, dtype=np.uint64)
        check = np.ascontiguousarray(check, dtype=np.uint64)
        n = len(us)
        assert len(p) == len(c) == len(seg) == len(check) == n
        codes = np.empty(n, np.int32)
        first = np.empty(n, np.int64)
        got = _LIB.shadowlab_hhist_add(
            self._h, us.ctypes.data, p.ctypes.data, c.ctypes.data, seg.ctypes.data,
            check.ctypes.data, n, *self._args, codes.ctypes.data, first.ctypes.data,
        )  # fmt: skip
        if got < 0:
            self.close()
            if got == -2:
                raise SegmentCollision("two segment values share a 64-bit hash")
            if got == -3:
                raise TooSparse("the calibration histogram's dense cells exceed their bound")
            raise MemoryError("shadowlab: no memory for the calibration histogram")
        return codes, first[:got]

    def cells(self) -> dict[str, np.ndarray]:
        """The cells holding a row: ``key``, ``null_ts`` (a null timestamp: key null),
        ``code``, ``n``, ``vmin``, ``vmax`` (+inf/-inf: no finite candidate score), ``naive``."""
        assert self._h, "closed"
        m = int(_LIB.shadowlab_hhist_size(self._h))
        out = {k: np.empty(m, np.int64) for k in ("key", "code", "n", "naive")}
        out["null_ts"] = np.empty(m, np.int8)
        out["vmin"], out["vmax"] = np.empty(m), np.empty(m)
        names = ("key", "null_ts", "code", "n", "vmin", "vmax", "naive")
        _LIB.shadowlab_hhist_export(self._h, *(out[k].ctypes.data for k in names))
        return out

    def close(self) -> None:
        if self._h:
            _LIB.shadowlab_hhist_free(self._h)  # type: ignore[union-attr]
            self._h = None

    def __del__(self) -> None:
        self.close()
