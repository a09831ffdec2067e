"""shadowlab._memory: freed numpy temporaries are reused, not re-faulted from the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# A chunk loop as the folds run it: the same temporaries (800 KB each) allocated and freed 300
# times. Prints whether the thresholds were set and the minor page faults of the loop.
_LOOP = """
import json, resource
import numpy as np
import shadowlab
from shadowlab import _memory
x = np.random.default_rng(0).random(100_000)
for _ in range(20):
    np.floor(x * 3.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    np.floor(x * 3.0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
print(json.dumps({"applied": _memory._applied, "faults": after - before}))
"""


def _run(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SHADOWLAB_MALLOC"}
    if env_value is not None:
        env["SHADOWLAB_MALLOC"] = env_value
    out = subprocess.run(
        [sys.executable, "-c", _LOOP], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt is Linux-only")
def test_importing_shadowlab_keeps_freed_numpy_buffers_unless_told_not_to():
    tuned, system = _run(None), _run("system")
    assert tuned["applied"] is True and system["applied"] is False
    # glibc's defaults hand the freed 800 KB back to the kernel: the next chunk faults its
    # ~200 pages in again (300 chunks: ~60 000 faults); kept in the heap it faults none
    assert system["faults"] > 20_000
    assert tuned["faults"] < system["faults"] / 20


def test_keep_freed_memory_is_applied_once():
    from shadowlab import _memory

    first = _memory.keep_freed_memory()
    assert _memory.keep_freed_memory() is first
