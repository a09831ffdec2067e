"""Build hook: compile ``shadowlab/_fold.c`` into ``shadowlab/_fold.so`` (loaded with ctypes).

Run by hatchling for wheels and editable installs, with ``$CC`` or the compiler Python was built
with. Without a working C compiler the build goes on without the library and shadowlab folds
histograms with numpy (same results, more CPU).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FLAGS = ["-O2", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math"]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if os.environ.get("SHADOWLAB_NATIVE", "1") == "0":
            return
        root = Path(self.root)
        src, lib = root / "shadowlab" / "_fold.c", root / "shadowlab" / "_fold.so"
        cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
        cmd = [*cc, *FLAGS, "-o", str(lib), str(src), "-lm"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or err
            print(
                f"shadowlab: could not compile {src.name} ({detail}); numpy fold", file=sys.stderr
            )
            return
        if version != "editable":  # an editable install loads it from the source tree
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
            build_data["force_include"][str(lib)] = "shadowlab/_fold.so"
