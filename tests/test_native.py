"""shadowlab._native: the compiled fold gives what the numpy fold gives, value for value.

The numpy path (``_native._LIB`` set to None) is the reference: its bin ids are the grids'
documented IEEE steps, tested against the polars expressions in test_drift.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from shadowlab import _native, drift

needs_lib = pytest.mark.skipif(not _native.available(), reason="shadowlab/_fold.so not built")


@pytest.fixture
def numpy_only(monkeypatch):
    """Run the body with the numpy fold."""

    def use_numpy():
        monkeypatch.setattr(_native, "_LIB", None)

    return use_numpy


def _hard_values(grid, rng) -> np.ndarray:
    """Random scores, every edge of the grid and its two float neighbours, specials."""
    edges = grid.left_np(np.arange(grid.bins + 1))
    return np.concatenate(
        [
            rng.random(100_000),
            rng.beta(0.5, 20, 100_000),
            edges,
            np.nextafter(edges, np.inf),
            np.nextafter(edges, -np.inf),
            rng.normal(grid.lo, 2.0, 10_000),
            [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 0.5, 5e-324, -5e-324, 1 + 2**-52],
            [grid.lo, grid.hi, np.nextafter(grid.hi, np.inf), np.nextafter(grid.lo, -np.inf)],
        ]
    )


GRIDS = [drift._DyadicGrid(), drift._DyadicGrid(8, 4), drift._Grid(-0.3, 2.7), drift._Grid(0, 1, 7)]


def test_cc_builds_the_library():
    # CI machines have a C compiler: the kernel must then be built and in use (a silent numpy
    # fallback would pass every other test here and cost the benchmarks ~1 s a pass)
    if (
        shutil.which(os.environ.get("CC", "cc")) is None
        or os.environ.get("SHADOWLAB_NATIVE") == "0"
    ):
        pytest.skip("no C compiler on this machine")
    assert _native.LIBRARY.exists(), "pip install did not compile shadowlab/_fold.c"
    assert _native.available()


@needs_lib
@pytest.mark.parametrize("grid", GRIDS, ids=repr)
def test_bin_ids_equal_numpy(grid, rng, numpy_only):
    x = _hard_values(grid, rng)
    got = grid.bin_np(x, 2)
    numpy_only()
    want = grid.bin_np(x, 2)
    assert got.dtype == want.dtype == np.int64
    np.testing.assert_array_equal(got, want)
    assert set(np.unique(want[~np.isfinite(x) & ~np.isnan(x)] - 2)) <= {-1, grid.bins}
    assert np.all(want[np.isnan(x)] == drift.MISSING_BIN + 2)


@needs_lib
@pytest.mark.parametrize("grid", GRIDS, ids=repr)
@pytest.mark.parametrize("with_sum", [False, True])
def test_fold_equals_numpy(grid, with_sum, rng, numpy_only):
    """Counts, minima, maxima and offset sums of a chunked fold, bit for bit."""
    x = _hard_values(grid, rng)
    rng.shuffle(x)
    chunks = [pl.DataFrame({"__x0": part}) for part in np.array_split(x, 7)]
    _, fold = drift._hist_fold(["v"], grid, with_sum)
    got = fold(iter(chunks))
    numpy_only()
    _, fold = drift._hist_fold(["v"], grid, with_sum)
    want = fold(iter(chunks))
    assert got.columns == want.columns
    assert got.equals(want, null_equal=True)
    assert int(want["n"].sum()) == len(x)


@needs_lib
def test_fold_rejects_a_wrong_accumulator():
    grid = drift._DyadicGrid()
    n = np.zeros(grid.bins + 3, np.int32)  # the kernel writes int64 counts
    mn, mx = np.full(grid.bins + 3, np.inf), np.full(grid.bins + 3, -np.inf)
    lefts = grid.left_np(np.arange(grid.bins + 3) - 2)
    with pytest.raises(AssertionError):
        _native.fold(grid.native, np.zeros(3), n, mn, mx, None, lefts)


def test_switched_off_by_environment():
    code = "from shadowlab import _native; print(_native.available())"
    env = {**os.environ, "SHADOWLAB_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False"
