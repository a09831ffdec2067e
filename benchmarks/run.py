"""shadowlab benchmarks: every measurement in a fresh process, median wall time and peak RSS.

Usage::

    python benchmarks/run.py --rows 1e6,1e7,5e7          # the full table (make bench)
    python benchmarks/run.py --rows 1e5 --repeat 1       # smoke run (CI)

Weeks are generated once by :mod:`weeks` (parametric, fast) and cached outside the repository
(``~/.cache/shadowlab-bench`` or ``--cache``). Each measurement is a small Python program run in a
fresh interpreter; its wall time covers the whole process (imports included, as a CI job would
pay them) and its peak RSS comes from ``wait4``'s resource usage of that child (and of any process
it waited for, e.g. the ``shadowlab gate`` CLI). A baseline whose package is missing (Evidently,
NannyML: the ``bench`` extra) is reported as "not installed".

This parent process imports the standard library only and generates weeks in a subprocess too:
on Linux a child's ``ru_maxrss`` starts from the RSS of the process it was forked from (the
exec'd-away memory map's high-water mark is kept), so a parent holding numpy, polars and a
generated week would put a floor of a few hundred MB under every measurement.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

_READ = """
import pyarrow.dataset as ds
t = ds.dataset(PAIRS, format="parquet", partitioning="hive").to_table(
    columns=["primary_score", "candidate_score"])
ref = t["primary_score"].to_numpy(zero_copy_only=False)
cur = t["candidate_score"].to_numpy(zero_copy_only=False)
del t
"""

MEASUREMENTS: dict[str, tuple[str, str]] = {
    # name -> (needs module, program). PAIRS, LABELS, REF, WEEK, T1 are defined before it runs.
    "floor: read both scores (polars)": (
        "",
        """
import polars as pl
df = pl.scan_parquet(PAIRS + "/**/*.parquet").select("primary_score", "candidate_score").collect()
assert df.height > 0
""",
    ),
    # what every shadowlab measurement below pays first: the request-id and non-finite checks
    "shadowlab scan_pairs (validation alone)": (
        "shadowlab.logs",
        """
from shadowlab.logs import scan_pairs
scan_pairs(PAIRS)
""",
    ),
    "shadowlab ks_2samp + psi": (
        "shadowlab.drift",
        """
import polars as pl
from shadowlab.drift import ks_2samp, psi
from shadowlab.logs import scan_pairs
lf = scan_pairs(PAIRS)
ks = ks_2samp(pl.col("primary_score"), pl.col("candidate_score"), data=lf)
p = psi(pl.col("primary_score"), pl.col("candidate_score"), data=lf)
print(ks.statistic, p.statistic)
""",
    ),
    "shadowlab compare_distributions (KS + PSI)": (
        "shadowlab.drift",
        """
import polars as pl
from shadowlab.drift import compare_distributions
from shadowlab.logs import scan_pairs
r = compare_distributions(pl.col("primary_score"), pl.col("candidate_score"),
                          data=scan_pairs(PAIRS), wasserstein=False)
print(r.ks.statistic, r.psi.statistic)
""",
    ),
    "scipy ks_2samp + numpy psi": (
        "",
        _READ
        + """
import numpy as np
from scipy import stats
ks = stats.ks_2samp(ref, cur)
edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)))
edges[0], edges[-1] = -np.inf, np.inf
pr = np.histogram(ref, edges)[0] / len(ref)
pc = np.histogram(cur, edges)[0] / len(cur)
pr, pc = np.clip(pr, 1e-6, None), np.clip(pc, 1e-6, None)
print(ks.statistic, float(np.sum((pr - pc) * np.log(pr / pc))))
""",
    ),
    "evidently KS + PSI": (
        "evidently",
        _READ
        + """
import pandas as pd
from evidently import Report
from evidently.metrics import ValueDrift
r, c = pd.DataFrame({"score": ref}), pd.DataFrame({"score": cur})
del ref, cur
for method in ("ks", "psi"):
    Report([ValueDrift(column="score", method=method)]).run(c, r).dict()
""",
    ),
    "nannyml KS (univariate drift)": (
        "nannyml",
        _READ
        + """
import pandas as pd
import nannyml as nml
r, c = pd.DataFrame({"score": ref}), pd.DataFrame({"score": cur})
del ref, cur
calc = nml.UnivariateDriftCalculator(column_names=["score"], chunk_number=1,
                                     continuous_methods=["kolmogorov_smirnov"])
calc.fit(r)
calc.calculate(c)
""",
    ),
    "calibrate_threshold (+day, +country)": (
        "shadowlab.thresholds",
        """
from shadowlab.thresholds import calibrate_threshold
cal = calibrate_threshold(PAIRS, T1, by=["country"])
print(cal.threshold)
""",
    ),
    "compare_scores by day": (
        "shadowlab.drift",
        """
from shadowlab.drift import compare_scores
res = compare_scores(PAIRS, reference=REF, every="1d")
""",
    ),
    "simulate_load fluid, 3 policies": (
        "shadowlab.load",
        """
from shadowlab.load import simulate_load
rep = simulate_load(PAIRS, {"v1": ("primary", T1), "v2 naive": ("candidate", T1),
                            "v2 calibrated": ("candidate", T1 + 0.05)}, None)
""",
    ),
    "feedback_diagnostics (labels join)": (
        "shadowlab.feedback",
        """
from shadowlab.feedback import feedback_diagnostics
from shadowlab.logs import scan_labels
rep = feedback_diagnostics(PAIRS, scan_labels(LABELS), T1, T1 + 0.05)
""",
    ),
    "shadowlab gate (end to end)": (
        "shadowlab.gate",
        """
import os, subprocess, sys, tempfile
out = tempfile.mkdtemp()
rc = subprocess.run([sys.executable, "-m", "shadowlab.cli", "gate", PAIRS, "--labels", LABELS,
                     "--reference", REF, "--primary-threshold", str(T1),
                     "--candidate-threshold", "calibrate", "--out", out + "/verdict.json"],
                    check=False, stdout=subprocess.DEVNULL).returncode
# 0 = PASS, 1 = FAIL/INCONCLUSIVE (a verdict was written); anything else is a broken run.
assert rc in (0, 1) and os.path.exists(out + "/verdict.json"), f"gate exited {rc}"
""",
    ),
    "shadowlab report": (
        "shadowlab.report",
        """
import subprocess, sys, tempfile
out = tempfile.mkdtemp()
subprocess.run([sys.executable, "-m", "shadowlab.cli", "report", PAIRS, "--labels", LABELS,
                "--reference", REF, "--primary-threshold", str(T1), "--out", out + "/r.html",
                "--quiet"], check=True, stdout=subprocess.DEVNULL)
""",
    ),
}


# the rows computing KS + PSI, compared with the baselines that do the same
_KS_PSI = (
    "shadowlab ks_2samp + psi",
    "shadowlab compare_distributions (KS + PSI)",
    "scipy ks_2samp + numpy psi",
)


@dataclass(frozen=True)
class Sample:
    wall_s: float
    rss_mb: float
    ok: bool
    note: str = ""


def _installed(module: str) -> bool:
    if not module:
        return True
    code = f"import importlib.util, sys; sys.exit(0 if importlib.util.find_spec({module!r}) else 1)"
    probe = subprocess.run([sys.executable, "-c", code], check=False)
    return probe.returncode == 0


def _run_child(program: str, week: Path) -> Sample:
    """Run one program in a fresh interpreter and measure that child alone (wait4)."""
    t1 = json.loads((week / "manifest.json").read_text())["primary_threshold"]
    prelude = (
        f"PAIRS = {str(week / 'pairs')!r}\nLABELS = {str(week / 'labels')!r}\n"
        f"REF = {str(week / 'reference.parquet')!r}\nWEEK = {str(week)!r}\n"
        f"T1 = {float(t1)!r}\n"
    )
    err_path = week / ".bench-stderr"
    with open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", prelude + textwrap.dedent(program)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    ok = proc.returncode == 0
    lines = err_path.read_text(errors="replace").strip().splitlines()
    note = "" if ok else (lines[-1][:120] if lines else f"exit {proc.returncode}")
    return Sample(wall, usage.ru_maxrss / 1024, ok, note)


def _write_week(cache: Path, rows: int) -> Path:
    """Generate (or reuse) the cached week in a child process; return its folder."""
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); from pathlib import Path; "
        f"from weeks import write_week; print(write_week(Path({str(cache)!r}), {rows}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, stdout=subprocess.PIPE, text=True
    )
    return Path(done.stdout.strip().splitlines()[-1])


def _fmt_rows(n: int) -> str:
    return f"{n / 1e6:g} M" if n >= 1_000_000 else f"{n / 1e3:g} k"


def _compile_package() -> None:
    """Write shadowlab's bytecode first, as ``pip install`` does for an installed package: an
    editable install compiles its modules at each import when ``PYTHONDONTWRITEBYTECODE`` is
    set (this workplace's machines set it), ~0.3 s of every gate process."""
    code = (
        "import compileall, os, shadowlab; "
        "compileall.compile_dir(os.path.dirname(shadowlab.__file__), quiet=1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1e6,1e7,5e7", help="comma-separated sizes, e.g. 1e6,1e7")
    ap.add_argument("--repeat", type=int, default=3, help="fresh runs per measurement (median)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "shadowlab-bench"))
    ap.add_argument("--only", default="", help="comma-separated substrings of measurement names")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="results file ('' = none)")
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.rows.split(",") if s]
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    names = [n for n in MEASUREMENTS if not wanted or any(w in n for w in wanted)]
    cache = Path(args.cache)
    _compile_package()
    results: dict[int, dict[str, Sample | str]] = {}
    for rows in sizes:
        t0 = time.perf_counter()
        week = _write_week(cache, rows)
        print(
            f"# {_fmt_rows(rows)} pairs: week ready in {time.perf_counter() - t0:.1f} s ({week})",
            flush=True,
        )
        results[rows] = {}
        for name in names:
            module, program = MEASUREMENTS[name]
            if not _installed(module):
                results[rows][name] = f"not installed ({module})"
                print(f"  {name:<40} not installed ({module})", flush=True)
                continue
            samples = [_run_child(program, week) for _ in range(args.repeat)]
            bad = [s for s in samples if not s.ok]
            if bad:
                results[rows][name] = f"failed: {bad[0].note}"
                print(f"  {name:<40} FAILED: {bad[0].note}", flush=True)
                continue
            med = Sample(
                statistics.median(s.wall_s for s in samples),
                statistics.median(s.rss_mb for s in samples),
                True,
            )
            results[rows][name] = med
            print(f"  {name:<40} {med.wall_s:8.2f} s {med.rss_mb:9.0f} MB", flush=True)
    table = _markdown(results, names, args.repeat)
    print()
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    failed = any(
        isinstance(v, str) and v.startswith("failed") for r in results.values() for v in r.values()
    )
    return 1 if failed else 0


def _machine() -> str:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    pkgs = ", ".join(
        f"{p} {version(p)}"
        for p in ("shadowlab", "polars", "pyarrow", "numpy", "scipy", "evidently", "nannyml")
    )
    return (
        f"{os.cpu_count()} cores ({_cpu_model()}), {mem_gb:.0f} GiB, {platform.machine()}, "
        f"Python {platform.python_version()}; {pkgs}"
    )


def _cpu_model() -> str:
    """The CPU's name (numpy's sort and BLAS pick kernels by CPU: baselines move with it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _markdown(results: dict[int, dict[str, Sample | str]], names: list[str], repeat: int) -> str:
    lines = [
        "# shadowlab benchmark results",
        "",
        f"Date: {dt.date.today().isoformat()}. Machine: {_machine()}.",
        f"Each figure is the median of {repeat} fresh processes (whole process: interpreter start,"
        " imports, reading Parquet, computing); peak RSS of that process.",
        "Generated by `python benchmarks/run.py` (parametric weeks from `benchmarks/weeks.py`).",
        "",
    ]
    floor_name = next(iter(MEASUREMENTS))
    for rows, res in results.items():
        floor = res.get(floor_name)
        base = {k: res.get(k) for k in ("scipy ks_2samp + numpy psi", "evidently KS + PSI")}
        lines += [
            f"## {_fmt_rows(rows)} pairs",
            "",
            "| measurement | wall (s) | peak RSS (MB) | × floor | scipy+numpy ÷ this | Evidently ÷ this |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in names:
            v = res.get(name)
            if not isinstance(v, Sample):
                lines.append(f"| {name} | {v} | | | | |")
                continue
            ratio = f"{v.wall_s / floor.wall_s:.1f}" if isinstance(floor, Sample) else ""
            rel = [
                f"{b.wall_s / v.wall_s:.1f}" if isinstance(b, Sample) and name in _KS_PSI else ""
                for b in base.values()
            ]
            lines.append(
                f"| {name} | {v.wall_s:.2f} | {v.rss_mb:.0f} | {ratio} | {rel[0]} | {rel[1]} |"
            )
        lines.append("")
    lines += _targets(results)
    return "\n".join(lines) + "\n"


_KS_ROWS = ("shadowlab ks_2samp + psi", "shadowlab compare_distributions (KS + PSI)")


def _targets(results: dict[int, dict[str, Sample | str]]) -> list[str]:
    """Issue 10's targets (2 cores), each checked against the measured table: met or missed."""

    def get(rows: int, name: str) -> Sample | None:
        v = results.get(rows, {}).get(name)
        return v if isinstance(v, Sample) else None

    out: list[tuple[str, str, bool | None]] = []
    big, mid = 50_000_000, 10_000_000
    for name in _KS_ROWS:
        v, floor = get(big, name), get(big, "floor: read both scores (polars)")
        scipy_, evid = get(big, "scipy ks_2samp + numpy psi"), get(big, "evidently KS + PSI")
        ev10, v10 = get(mid, "evidently KS + PSI"), get(mid, name)
        short = name.removeprefix("shadowlab ")
        if v:
            out.append(
                (
                    f"{short}: 50 M pairs in <= 6 s and <= 2 GB",
                    f"{v.wall_s:.2f} s, {v.rss_mb / 1024:.2f} GB",
                    v.wall_s <= 6 and v.rss_mb <= 2048,
                )
            )
        if v and scipy_:
            r = scipy_.wall_s / v.wall_s
            out.append((f"{short}: >= 4x faster than scipy + numpy at 50 M", f"{r:.1f}x", r >= 4))
        if v and evid:
            r = evid.wall_s / v.wall_s
            out.append((f"{short}: >= 20x faster than Evidently at 50 M", f"{r:.1f}x", r >= 20))
        if v and floor:
            r = v.wall_s / floor.wall_s
            out.append((f"{short}: within 5x of the read floor at 50 M", f"{r:.1f}x", r <= 5))
        if v10 and ev10:
            r = ev10.wall_s / v10.wall_s
            out.append((f"{short}: >= 10x faster than Evidently at 10 M", f"{r:.1f}x", r >= 10))
    cal = get(big, "calibrate_threshold (+day, +country)")
    if cal:
        out.append(
            ("calibrate_threshold: 50 M pairs in <= 3 s", f"{cal.wall_s:.2f} s", cal.wall_s <= 3)
        )
    gate = "shadowlab gate (end to end)"
    g = get(big, gate)
    if g:
        out.append(
            (
                "whole gate, labels included: 50 M pairs in <= 30 s and <= 4 GB",
                f"{g.wall_s:.2f} s, {g.rss_mb / 1024:.2f} GB",
                g.wall_s <= 30 and g.rss_mb <= 4096,
            )
        )
    sizes = sorted(r for r in results if get(r, gate))
    if len(sizes) >= 2:
        a, b = get(sizes[0], gate), get(sizes[-1], gate)
        assert a and b
        grow = sizes[-1] / sizes[0]
        out.append(
            (
                f"gate memory grows less than linearly ({_fmt_rows(sizes[0])} -> {_fmt_rows(sizes[-1])})",
                f"x{b.rss_mb / a.rss_mb:.1f} for x{grow:g} rows",
                b.rss_mb / a.rss_mb < grow,
            )
        )
        out.append(
            (
                f"gate time grows linearly or better ({_fmt_rows(sizes[0])} -> {_fmt_rows(sizes[-1])})",
                f"x{b.wall_s / a.wall_s:.1f} for x{grow:g} rows",
                b.wall_s / a.wall_s <= grow,
            )
        )
    if not out:
        return []
    lines = [
        "## Targets (issue 10, 2 cores)",
        "",
        "Checked against the tables above by `run.py`; where the time goes: `benchmarks/PROFILE.md`.",
        "",
        "| target | measured | |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {'met' if ok else '**missed**'} |" for t, m, ok in out]
    return [*lines, ""]


if __name__ == "__main__":
    sys.exit(main())
