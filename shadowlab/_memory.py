"""Keep freed numpy buffers in the process instead of handing them back to the kernel.

shadowlab's passes fold a week chunk by chunk in numpy: every chunk allocates temporaries of the
same few sizes (bin ids, masks, ``np.bincount`` outputs; 0.1-8 MB each) and frees them again.
With glibc's default settings the heap top above 128 KB of free memory is returned to the
kernel (``M_TRIM_THRESHOLD``), so the next chunk's temporaries are fresh pages and every 4 KB
page costs a page fault on first touch. On the 2-core VM of ``benchmarks/`` a fault costs ~3 us:
a ``np.floor(x * s)`` over 100 k values took 6.2 ns a value instead of 0.2, and
``compare_scores`` over 50 M pairs spent a quarter of its time faulting (10.0 s against 7.5 s).

:func:`keep_freed_memory` raises the trim threshold to 512 MB and fixes the mmap threshold at
glibc's 32 MB maximum, so the temporaries are reused from the heap. It changes no result, only
where freed memory waits: peak RSS is unchanged, and up to 512 MB of freed memory may stay
mapped until the process exits. polars and pyarrow use their own allocators and are not
affected. It runs once when :mod:`shadowlab` is imported, on Linux with glibc only; set
``SHADOWLAB_MALLOC=system`` to keep the C library's defaults.

References
----------
.. [1] The GNU C Library manual, "Malloc Tunable Parameters" (``mallopt``, ``M_TRIM_THRESHOLD``,
       ``M_MMAP_THRESHOLD``). https://www.gnu.org/software/libc/manual/html_node/Malloc-Tunable-Parameters.html
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 512 << 20
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: larger is refused

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds once per process; ``True`` when they were set.

    Does nothing (``False``) off Linux, without glibc's ``mallopt``, or with
    ``SHADOWLAB_MALLOC=system`` in the environment.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith("linux") or os.environ.get("SHADOWLAB_MALLOC") == "system":
        return False
    try:  # the process's own symbols hold libc's (find_library would spawn ldconfig)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # glibc returns 1 on success (musl's stub returns 0: nothing is changed there)
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _applied
