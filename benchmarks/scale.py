"""Scale run: the same summary passes on polars (streaming, one machine) and Spark (local mode).

Usage::

    python benchmarks/scale.py --rows 1e6,1e7,5e7,2e8            # the table in docs/scale-out.md
    python benchmarks/scale.py --rows 1e6 --only "engine pass"    # smoke run

Weeks come from :mod:`weeks` (parametric, numpy + pyarrow, cached outside the repository in
``~/.cache/shadowlab-bench`` or ``--cache``), the same hive layout the pair-log writer produces.

Every measurement runs in a fresh process. Wall time covers the whole process (interpreter start,
imports, for Spark the JVM start, reading Parquet, computing). Peak memory is the peak of the
**summed RSS of the whole process tree** sampled every 0.2 s from ``/proc`` (for Spark: driver
Python, the JVM and its Python workers), plus, for the polars runs, ``wait4``'s exact peak RSS of
the single process. What is measured:

* ``engine pass``: one mergeable summary, the shape every analysis uses: a fine histogram
  (4096 bins) of both scores per UTC day plus trigger counts at the primary threshold, over the
  raw Parquet (no log validation); on polars through :class:`~shadowlab.engine.PolarsSource`,
  on Spark through :class:`~shadowlab.engines.spark.SparkSource` (``mapInArrow``).
* ``refinement pull``: the rows of one critical bin (``|score - 0.5| < 1e-4``), i.e. the second
  pass of the exact order statistics.
* ``calibrate_threshold``: the real analysis end to end, from ``scan_pairs`` /
  ``read_pairs`` (which validate the logs, including a distinct count of request ids) to the
  exact threshold: validation + histogram + refinement pull + breakdown passes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from weeks import LAYOUT, PRIMARY_THRESHOLD, write_week  # noqa: E402

_AGG = """
import polars as pl
from shadowlab.engine import Aggregation
def build(lf):
    day = pl.col("ts").dt.date().alias("day")
    parts = []
    for col in ("primary_score", "candidate_score"):
        x = pl.col(col)
        parts.append(
            lf.select(day, (x * 4096).floor().clip(0, 4095).cast(pl.Int32).alias("bin"),
                      (x >= T1).alias("hit"))
            .filter(pl.col("bin").is_not_null())
            .group_by("day", "bin")
            .agg(pl.len().cast(pl.Int64).alias("n"), pl.col("hit").sum().cast(pl.Int64).alias("hits"))
            .with_columns(pl.lit(col).alias("model"))
        )
    return pl.concat(parts)
AGG = Aggregation(build, ("model", "day", "bin"), {"n": "sum", "hits": "sum"})
PRED = (pl.col("candidate_score") - 0.5).abs() < 1e-4
"""

_SPARK = """
from shadowlab.engines.spark import SparkSource, read_pairs, spark_session
spark = spark_session(MASTER, driver_memory="2g")
lap("startup")
"""

_PRELUDE = """
import json, time
_T0 = time.perf_counter()
_LAPS = {}
def lap(name):
    global _T0
    now = time.perf_counter()
    _LAPS[name] = now - _T0
    _T0 = now
def report():
    print("LAPS " + json.dumps(_LAPS))
"""

_ENGINE_POLARS = """
from shadowlab.engine import PolarsSource
lap("startup")
source = PolarsSource(pl.scan_parquet(PAIRS + "/**/*.parquet"))
out = source.aggregate(AGG)
lap("pass")
assert int(out.filter(pl.col("model") == "primary_score")["n"].sum()) == ROWS
source.aggregate(AGG)
lap("pass again")
source.pull(PRED, ["candidate_score"])
lap("pull")
"""

_ENGINE_SPARK = """
source = SparkSource(spark.read.option("recursiveFileLookup", "true").parquet(PAIRS))
out = source.aggregate(AGG)
lap("pass")
assert int(out.filter(pl.col("model") == "primary_score")["n"].sum()) == ROWS
source.aggregate(AGG)
lap("pass again")
source.pull(PRED, ["candidate_score"])
lap("pull")
spark.stop()
"""

_CALIBRATE_POLARS = """
from shadowlab.logs import scan_pairs
from shadowlab.thresholds import calibrate_threshold
lap("startup")
pairs = scan_pairs(PAIRS)
lap("read+validate")
calibrate_threshold(pairs, T1)
lap("analysis")
"""

_CALIBRATE_SPARK = """
from shadowlab.thresholds import calibrate_threshold
pairs = read_pairs(spark, PAIRS)
lap("read+validate")
calibrate_threshold(pairs, T1)
lap("analysis")
spark.stop()
"""

MEASUREMENTS: dict[str, tuple[str, str]] = {
    # name -> (engine, program). PAIRS, T1, ROWS, MASTER and lap() exist before it runs; each
    # lap("x") records the seconds since the previous one.
    "engine pass + pull": ("polars", _AGG + _ENGINE_POLARS),
    "engine pass + pull ": ("spark", _AGG + _SPARK + _ENGINE_SPARK),
    "calibrate_threshold": ("polars", _CALIBRATE_POLARS),
    "calibrate_threshold ": ("spark", _SPARK + _CALIBRATE_SPARK),
}


@dataclass(frozen=True)
class Sample:
    wall_s: float
    tree_mb: float  # peak of the summed RSS of the process tree (sampled)
    self_mb: float  # wait4 peak RSS of the child process alone
    ok: bool
    note: str = ""
    laps: dict[str, float] = field(default_factory=dict)


def _tree_rss_mb(root: int) -> float:
    """Summed RSS of ``root`` and all its descendants, from /proc (Linux)."""
    parent: dict[int, int] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        rss[int(entry)] = pages * page
    total, stack, seen = 0, [root], set()
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 2**20


def _run_child(program: str, week: Path, rows: int, master: str) -> Sample:
    prelude = (
        f"PAIRS = {str(week / 'pairs')!r}\nT1 = {PRIMARY_THRESHOLD!r}\nROWS = {rows!r}\n"
        f"MASTER = {master!r}\n"
    )
    err_path = week / ".scale-stderr"
    peak = [0.0]
    with open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", prelude + _PRELUDE + textwrap.dedent(program) + "report()\n"],
            stdout=subprocess.PIPE,
            stderr=err,
        )
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], _tree_rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    code = os.waitstatus_to_exitcode(status)
    lines = err_path.read_text(errors="replace").strip().splitlines()
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    note = "" if code == 0 else ((errors or lines or [f"exit {code}"])[-1][:160])
    laps = {}
    for line in out.splitlines():
        if line.startswith("LAPS "):
            laps = json.loads(line[5:])
    return Sample(wall, peak[0], usage.ru_maxrss / 1024, code == 0, note, laps)


def _replicated_week(cache: Path, rows: int, base: int) -> Path:
    """A week of ``rows`` pairs made of ``rows // base`` hard-linked copies of the ``base`` week.

    Generating 200 M rows with :mod:`weeks` takes over an hour on a shared 2-core machine;
    hard links cost no disk and no time. The copies repeat request ids, so only the raw engine
    passes run on such a week (``scan_pairs``/``read_pairs`` would rightly reject duplicates).
    """
    if rows % base:
        raise SystemExit(f"--replicate-from {base} must divide the size {rows}")
    source = write_week(cache, base)
    out = cache / f"rows-{rows}-x{rows // base}-layout{LAYOUT}"
    if (out / "manifest.json").exists():
        return out
    for copy in range(rows // base):
        for f in sorted((source / "pairs").rglob("*.parquet")):
            target = out / "pairs" / f.parent.name / f"{f.stem}-copy{copy}.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(f, target)
    (out / "manifest.json").write_text(json.dumps({"rows": rows, "copies_of": str(source)}))
    return out


def _fmt_rows(n: int) -> str:
    return f"{n / 1e6:g} M" if n >= 1_000_000 else f"{n / 1e3:g} k"


def _parquet_mb(week: Path) -> float:
    return sum(p.stat().st_size for p in (week / "pairs").rglob("*.parquet")) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1e6,1e7,5e7,2e8", help="comma-separated sizes")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "shadowlab-bench"))
    ap.add_argument("--only", default="", help="comma-separated substrings of measurement names")
    ap.add_argument("--engines", default="polars,spark", help="polars, spark or both")
    ap.add_argument("--master", default="local[2]", help="Spark master of the spark runs")
    ap.add_argument("--out", default="", help="append the markdown table to this file")
    ap.add_argument(
        "--replicate-from",
        default="5e7",
        help="sizes above this are hard-linked copies of the week of this size (engine passes only)",
    )
    args = ap.parse_args(argv)
    sizes = [int(float(s)) for s in args.rows.split(",") if s]
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    engines = {e.strip() for e in args.engines.split(",")}
    names = [
        n
        for n, (engine, _) in MEASUREMENTS.items()
        if engine in engines and (not wanted or any(w in n for w in wanted))
    ]
    rows_out: list[str] = []
    for rows in sizes:
        t0 = time.perf_counter()
        base = int(float(args.replicate_from))
        replicated = rows > base
        if replicated:
            week = _replicated_week(Path(args.cache), rows, base)
        else:
            week = write_week(Path(args.cache), rows)
        print(
            f"# {_fmt_rows(rows)} pairs ({_parquet_mb(week):.0f} MB Parquet): week ready in "
            f"{time.perf_counter() - t0:.1f} s ({week})",
            flush=True,
        )
        for name in names:
            if replicated and "engine pass" not in name:
                continue
            engine, program = MEASUREMENTS[name]
            s = _run_child(program, week, rows, args.master)
            label = f"{engine} {args.master}" if engine == "spark" else "polars streaming"
            if not s.ok:
                print(f"  {name.strip():<22} {label:<18} FAILED: {s.note}", flush=True)
                rows_out.append(f"| {_fmt_rows(rows)} | {name.strip()} | {label} | failed | | |")
                continue
            laps = ", ".join(f"{k} {v:.1f}" for k, v in s.laps.items())
            print(
                f"  {name.strip():<22} {label:<18} {s.wall_s:8.1f} s ({laps}) "
                f"tree {s.tree_mb:7.0f} MB  self {s.self_mb:7.0f} MB",
                flush=True,
            )
            rows_out.append(
                f"| {_fmt_rows(rows)} | {name.strip()} | {label} | {s.wall_s:.1f} | {laps} | "
                f"{s.tree_mb:.0f} |"
            )
    table = "\n".join(
        [
            f"Measured {dt.date.today().isoformat()} on {_machine()} "
            "(`python benchmarks/scale.py`).",
            "",
            "| pairs | measurement | engine | wall (s) | of which (s) | peak RSS, process tree (MB) |",
            "|---:|---|---|---:|---:|---:|",
            *rows_out,
        ]
    )
    print()
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table + "\n")
    return 0 if all("failed" not in r for r in rows_out) else 1


def _machine() -> str:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "-"

    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores (load {load:.1f}), {mem_gb:.0f} GiB, {platform.machine()}, "
        f"Python {platform.python_version()}, polars {version('polars')}, "
        f"pyspark {version('pyspark')}"
    )


if __name__ == "__main__":
    sys.exit(main())
