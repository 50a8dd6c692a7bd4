#!/usr/bin/env python3
"""Spark side by side: the flatfhir data source against Spark's own JSON reader and the CLI.

Started by `benches/spark/run` (which builds the release binary and the release extension
into the venv); see benches/README.md. In one process (one local[N] SparkSession, started
before any timing) and in rounds whose order rotates, it runs over ~1 GB of Observations:

  flatfhir-P  the schema pass as a Spark job (`flatfhir.spark.infer_schema`, one task per
              shard), then `spark.read.format("flatfhir").option("schemaJson", ...)
              .load(file).write.parquet(out)`, with the file cut into P shards
              (`shardBytes` = ceil(size / P)): P Spark partitions
  json-P      `spark.read.json(file)` (which infers its nested schema in a first job) then
              `.write.parquet(out)`, with `spark.sql.files.maxPartitionBytes` = ceil(size /
              P) and `spark.sql.files.minPartitionNum` = 1: P partitions. The output is nested
              (structs and arrays), not flattened
  flatfhir-write-P  the same schema job, then `flatfhir.spark.write_parquet(spark, file, out,
              schema=doc)`: P Spark tasks, each flattening its shard in Rust and writing its
              own part with pyarrow (no JVM rows, no Spark Parquet writer)
  cli         `flatfhir convert DIR --out OUT --quiet` (the release binary, one thread per
              core), as its own process

Each Spark job's time is split into the schema step (infer_schema / the read.json call,
which runs the inference job) and the read+write job. Peak RSS: for the CLI the process's
own (wait4); for Spark the sum over the driver, its JVM and the Python workers, sampled
every 0.1 s during the job (the JVM keeps its heap between jobs, so this is an upper
bound that includes what earlier jobs grew). Output: a Markdown report (printed, and
written to target/bench-results/spark-<timestamp>.md with the raw runs in .json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "benches"))
import compare  # noqa: E402  (the input generator shared with benches/compare)


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# peak RSS of this process and everything it started (the JVM, the Python workers)

def _descendants(root: int) -> list[int]:
    """`root` and every process below it (one scan of /proc)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_TICK = os.sysconf("SC_CLK_TCK")


def _rss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE_KB
        except (OSError, ValueError, IndexError):
            pass
    return total


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system, with reaped children's) of these processes."""
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / _TICK
        except (OSError, ValueError, IndexError):
            pass
    return total


class RssSampler:
    """Samples the summed RSS of this process tree every `every` seconds (`.peak_mb`) and
    counts the CPU seconds the tree used meanwhile (`.cpu_s`). The tree is found by a scan of
    /proc every `rescan` seconds; in between only those processes' statm is read, so the
    sampler itself costs little CPU."""

    def __init__(self, every: float = 0.1, rescan: float = 2.0) -> None:
        self.every, self.rescan, self.peak_kb, self.cpu_s = every, rescan, 0, 0.0
        self._cpu0 = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me, pids, scanned = os.getpid(), [], 0.0
        while not self._stop.is_set():
            if time.monotonic() - scanned > self.rescan:
                pids, scanned = _descendants(me), time.monotonic()
            self.peak_kb = max(self.peak_kb, _rss_kb(pids))
            self._stop.wait(self.every)

    def __enter__(self) -> "RssSampler":
        self._cpu0 = _cpu_s(_descendants(os.getpid()))
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.cpu_s = _cpu_s(_descendants(os.getpid())) - self._cpu0

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


# --------------------------------------------------------------------------------------------
# the runs

def out_shape(out: Path) -> tuple[int, int]:
    """(rows, top-level columns) of a Parquet file or a folder of part files."""
    import pyarrow.parquet as pq

    files = [out] if out.is_file() else sorted(p for p in out.rglob("*.parquet"))
    rows, cols = 0, 0
    for p in files:
        md = pq.ParquetFile(p).metadata
        rows += md.num_rows
        cols = max(cols, len(pq.ParquetFile(p).schema_arrow))
    return rows, cols


def run_cli(flatfhir: Path, inp_dir: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen([str(flatfhir), "convert", str(inp_dir), "--out", str(out), "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if status != 0:
        return {"ok": False, "error": err[-500:], "wall_s": wall}
    rows, cols = out_shape(out)
    return {"ok": True, "wall_s": wall, "rss_mb": ru.ru_maxrss / 1024, "rows": rows, "columns": cols,
            "cpu_s": ru.ru_utime + ru.ru_stime}


def _write(df, out: Path, codec: str, noop: bool) -> None:
    if noop:  # every row is produced, nothing is written: the reading side alone
        df.write.format("noop").mode("overwrite").save()
    else:
        df.write.option("compression", codec).parquet(str(out))


def run_flatfhir(spark, file: Path, rtype: str, parts: int, out: Path, codec: str, noop: bool = False) -> dict:
    from flatfhir import scale
    from flatfhir.spark import infer_schema

    shard_bytes = max(1, math.ceil(file.stat().st_size / parts))
    n = len(scale.plan_shards(str(file), rtype, shard_bytes=shard_bytes))
    with RssSampler() as rss:
        t0 = time.perf_counter()
        doc = infer_schema(spark, str(file), rtype, shard_bytes=shard_bytes)
        t1 = time.perf_counter()
        _write(spark.read.format("flatfhir").option("resourceType", rtype)
               .option("schemaJson", doc.json).option("shardBytes", str(shard_bytes))
               .load(str(file)), out, codec, noop)
        t2 = time.perf_counter()
    rows, cols = out_shape(out) if not noop else (None, None)
    return {"ok": True, "wall_s": t2 - t0, "schema_s": t1 - t0, "write_s": t2 - t1,
            "partitions": n, "rss_mb": rss.peak_mb, "cpu_s": rss.cpu_s, "rows": rows, "columns": cols}


def run_flatfhir_write(spark, file: Path, rtype: str, parts: int, out: Path, codec: str) -> dict:
    from flatfhir.spark import infer_schema, write_parquet

    shard_bytes = max(1, math.ceil(file.stat().st_size / parts))
    with RssSampler() as rss:
        t0 = time.perf_counter()
        doc = infer_schema(spark, str(file), rtype, shard_bytes=shard_bytes)
        t1 = time.perf_counter()
        res = write_parquet(spark, str(file), str(out), rtype, schema=doc, shard_bytes=shard_bytes,
                            compression=codec)
        t2 = time.perf_counter()
    rows, cols = out_shape(out)
    return {"ok": True, "wall_s": t2 - t0, "schema_s": t1 - t0, "write_s": t2 - t1,
            "partitions": len(res.files), "rss_mb": rss.peak_mb, "cpu_s": rss.cpu_s, "rows": rows,
            "columns": cols}


def run_json(spark, file: Path, parts: int, out: Path, codec: str, noop: bool = False) -> dict:
    size = file.stat().st_size
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(max(1, math.ceil(size / parts))))
    spark.conf.set("spark.sql.files.minPartitionNum", "1")
    with RssSampler() as rss:
        t0 = time.perf_counter()
        df = spark.read.json(str(file))  # the schema inference job runs here
        t1 = time.perf_counter()
        _write(df, out, codec, noop)
        t2 = time.perf_counter()
    n = df.rdd.getNumPartitions()
    rows, cols = out_shape(out) if not noop else (None, None)
    return {"ok": True, "wall_s": t2 - t0, "schema_s": t1 - t0, "write_s": t2 - t1,
            "partitions": n, "rss_mb": rss.peak_mb, "cpu_s": rss.cpu_s, "rows": rows, "columns": cols}


def session(cores: int, jvm: str, driver_memory: str):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    b = (SparkSession.builder.master(f"local[{cores}]").appName("flatfhir-bench")
         .config("spark.ui.enabled", "false")
         .config("spark.driver.memory", driver_memory)
         .config("spark.sql.shuffle.partitions", str(cores)))
    if jvm:
        b = b.config("spark.driver.extraJavaOptions", jvm).config("spark.executor.extraJavaOptions", jvm)
    s = b.getOrCreate()
    s.sparkContext.setLogLevel("ERROR")
    from flatfhir.spark import register

    register(s)
    return s


# --------------------------------------------------------------------------------------------
# report

def med(xs):
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict], nbytes: int) -> dict:
    good = [r for r in runs if r.get("ok")]
    if not good:
        return {"error": "; ".join(r.get("error", "?") for r in runs)}
    s = {"n": len(good), "wall_s": med([r["wall_s"] for r in good]),
         "walls": [round(r["wall_s"], 2) for r in good],
         "rss_mb": max(r["rss_mb"] for r in good if "rss_mb" in r),
         "rows": good[0].get("rows"), "columns": good[0].get("columns"),
         "partitions": good[0].get("partitions")}
    for k in ("schema_s", "write_s", "cpu_s"):
        if k in good[0]:
            s[k] = med([r[k] for r in good])
    s["mb_s"] = nbytes / s["wall_s"] / 1e6
    return s


def report(a, file: Path, nbytes: int, lines: int, tools: list[str], summ: dict, loads: list[str],
           versions: dict, started: str) -> str:
    out = [f"# Spark side by side: {nbytes / 1e9:.2f} GB of Observation ({lines:,} lines)", ""]
    out.append(f"{len(loads) - 1} round(s), order rotating; median wall seconds (all runs), MB/s of "
               "input, split into schema step + read/write job, CPU seconds (user + system, all "
               "processes: for Spark the JVM, its Python workers and the driver), peak RSS, output shape.")
    out.append("")
    out.append("| run | partitions | wall s (median; runs) | MB/s | schema s | read+write s | CPU s | peak RSS MB | rows × columns |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for t in tools:
        s = summ[t]
        if "error" in s:
            out.append(f"| {t} | | failed: {s['error'][:200]} | | | | | | |")
            continue
        walls = ", ".join(f"{w:.1f}" for w in s["walls"])
        sch = f"{s['schema_s']:.1f}" if "schema_s" in s else ""
        wr = f"{s['write_s']:.1f}" if "write_s" in s else ""
        cpu = f"{s['cpu_s']:.1f}" if "cpu_s" in s else ""
        shape = f"{s['rows']:,} × {s['columns']}" if s.get("rows") is not None else "(noop sink)"
        out.append(f"| {t} | {s.get('partitions') or ''} | {s['wall_s']:.1f} ({walls}) | {s['mb_s']:.0f} | "
                   f"{sch} | {wr} | {cpu} | {s['rss_mb']:.0f} | {shape} |")
    out.append("")
    cli = summ.get("cli", {})
    ratios = []
    for p in a.partitions:
        f, j = summ.get(f"flatfhir-{p}", {}), summ.get(f"json-{p}", {})
        def rat(x, y, k):
            return f"{x[k] / y[k]:.1f}×" if k in x and k in y else ""
        if f:
            ratios.append([str(p), rat(j, f, "wall_s"), rat(j, f, "cpu_s"), rat(f, cli, "wall_s"),
                           rat(f, cli, "cpu_s")])
        w = summ.get(f"flatfhir-write-{p}", {})
        if w:
            ratios.append([f"{p} (write)", rat(j, w, "wall_s"), rat(j, w, "cpu_s"), rat(w, cli, "wall_s"),
                           rat(w, cli, "cpu_s")])
    best_j = min((summ[t]["wall_s"] for t in tools
                  if t.startswith("json-") and "noop" not in t and "wall_s" in summ[t]), default=None)
    out.append("| partitions | json ÷ flatfhir, wall | json ÷ flatfhir, CPU | flatfhir ÷ cli, wall | flatfhir ÷ cli, CPU |")
    out.append("|---|---|---|---|---|")
    out.extend("| " + " | ".join(r) + " |" for r in ratios)
    out.append("")
    if best_j is not None:
        best_f = min((summ[t]["wall_s"] for t in tools
                      if t.startswith("flatfhir-") and "noop" not in t and "wall_s" in summ[t]), default=None)
        if best_f:
            out.append(f"Best against best: json {best_j:.1f} s ÷ flatfhir {best_f:.1f} s = {best_j / best_f:.1f}×.")
            out.append("")
    out.append(f"- Input: `{file}` (benches/compare's `obs-...` recipe), page cache warmed before each run.")
    out.append(f"- Spark: `local[{a.cores}]`, driver memory {a.driver_memory}, JVM options "
               f"`{a.jvm_options or '(none: the JVM defaults)'}`, Parquet compression {a.codec}; "
               f"session start excluded, one untimed warm-up job per reader on `{a.warmup or 'nothing'}` first. "
               "flatfhir-P = `infer_schema` job + data source with `schemaJson`; flatfhir-write-P = "
               "`infer_schema` job + `write_parquet` job (tasks write the parts with the CLI's writer).")
    out.append(f"- CLI: `{a.flatfhir} convert DIR --out OUT --quiet` (zstd, one thread per core).")
    out.append(f"- Load average (1/5/15 min) before each round and at the end: {' | '.join(loads)}.")
    out.append(f"- Started {started} UTC; machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
               f"kernel {platform.release()}.")
    out.append("- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    out.append(f"- Command: `{' '.join(sys.argv)}`")
    return "\n".join(out) + "\n"


def versions(flatfhir: Path) -> dict:
    from importlib import metadata

    v = {"flatfhir": subprocess.run([str(flatfhir), "--version"], capture_output=True, text=True).stdout.strip()
         if flatfhir.exists() else "(no binary)", "python": platform.python_version()}
    for pkg in ("flatfhir", "pyspark", "pyarrow"):
        try:
            v[pkg + " (pkg)" if pkg == "flatfhir" else pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = "not installed"
    v["java"] = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]
    try:
        v["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()
    except OSError:
        pass
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="obs-1gb", help="benches/compare input spec (default obs-1gb)")
    ap.add_argument("--data", type=Path, default=ROOT / "target" / "bench-data",
                    help="where the input is built and kept (default target/bench-data)")
    ap.add_argument("--fixtures", type=Path, default=compare.SHARED_FIXTURES)
    ap.add_argument("--results", type=Path, default=ROOT / "target" / "bench-results")
    ap.add_argument("--flatfhir", type=Path, default=ROOT / "target" / "release" / "flatfhir")
    ap.add_argument("--partitions", default="1,2,4,8", help="comma-separated (default 1,2,4,8)")
    ap.add_argument("--json-partitions", default="",
                    help="partitions of the json rows when they differ from --partitions (json is slow)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tools", default="flatfhir,json,cli",
                    help="any of flatfhir,flatfhir-write,json,cli,flatfhir-noop,json-noop (flatfhir-write: "
                         "flatfhir.spark.write_parquet; the -noop rows read into "
                         "Spark's noop sink: the reading side without the Parquet writer)")
    ap.add_argument("--cores", type=int, default=2, help="local[N] (default 2)")
    ap.add_argument("--driver-memory", default="2g")
    ap.add_argument("--jvm-options", default="",
                    help="extra JVM options for driver and executor (default none; the fast-start "
                         "'-XX:TieredStopAtLevel=1 -XX:+UseSerialGC' slows the JVM's own work)")
    ap.add_argument("--warmup", default="obs-10mb",
                    help="input of one untimed job per Spark reader before the timed runs (default "
                         "obs-10mb; '' for none)")
    ap.add_argument("--codec", default="zstd", help="Parquet compression of the Spark jobs (default zstd, as the CLI)")
    a = ap.parse_args()
    a.partitions = [int(p) for p in a.partitions.split(",") if p]
    a.json_partitions = [int(p) for p in a.json_partitions.split(",") if p]
    want = set(a.tools.split(","))

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    inp_dir = compare.make_input(a.input, a.data, a.fixtures, log=lambda m: print(m, file=sys.stderr))
    file = next(p for p in inp_dir.iterdir() if p.suffix == ".ndjson")
    rtype = file.stem
    nbytes = file.stat().st_size
    with open(file, "rb") as f:
        lines = sum(1 for _ in f)
    parts = {"flatfhir": a.partitions, "json": a.json_partitions or a.partitions}
    tools = [f"{k}-{p}" for k in ("flatfhir", "flatfhir-write", "json", "flatfhir-noop", "json-noop") if k in want
             for p in parts[k.split("-")[0]]] + (["cli"] if "cli" in want else [])
    if not a.flatfhir.exists() and "cli" in want:
        sys.exit(f"{a.flatfhir}: no such binary (cargo build --release -p flatfhir, or --flatfhir)")

    print(f"starting Spark local[{a.cores}] (not timed)", file=sys.stderr)
    spark = session(a.cores, a.jvm_options, a.driver_memory)
    scratch = a.data / "spark-scratch"
    if a.warmup:
        # One untimed job of each Spark reader on a small input first: the JVM's JIT, the
        # Python workers and their imports are warm before the first timed run, as in a
        # session that has run a few jobs.
        wdir = compare.make_input(a.warmup, a.data, a.fixtures, log=lambda m: print(m, file=sys.stderr))
        wfile = next(p for p in wdir.iterdir() if p.suffix == ".ndjson")
        print(f"warming up on {wfile} (not timed)", file=sys.stderr)
        kinds = {t.rsplit("-", 1)[0] for t in tools if t != "cli"}
        warm = []
        if kinds & {"flatfhir", "flatfhir-noop"}:
            warm.append(lambda o: run_flatfhir(spark, wfile, rtype, 2, o, a.codec))
        if "flatfhir-write" in kinds:
            warm.append(lambda o: run_flatfhir_write(spark, wfile, rtype, 2, o, a.codec))
        if kinds & {"json", "json-noop"}:
            warm.append(lambda o: run_json(spark, wfile, 2, o, a.codec))
        for fn in warm:
            shutil.rmtree(scratch, ignore_errors=True)
            fn(scratch / "out")
        shutil.rmtree(scratch, ignore_errors=True)
    a.results.mkdir(parents=True, exist_ok=True)
    base = a.results / f"spark-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    loads = []
    for rnd in range(a.rounds):
        loads.append(loadavg())
        order = tools[rnd % len(tools):] + tools[: rnd % len(tools)]
        if rnd % 2:
            order.reverse()  # alternate direction too, so no tool always follows the same one
        for t in order:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
            out = scratch / "out"
            subprocess.run(["cat", str(file)], stdout=subprocess.DEVNULL, check=False)  # warm the cache
            try:
                if t == "cli":
                    r = run_cli(a.flatfhir, inp_dir, out)
                else:
                    kind, p = t.rsplit("-", 1)
                    noop = kind.endswith("-noop")
                    if kind == "flatfhir-write":
                        r = run_flatfhir_write(spark, file, rtype, int(p), out, a.codec)
                    elif kind.startswith("flatfhir"):
                        r = run_flatfhir(spark, file, rtype, int(p), out, a.codec, noop)
                    else:
                        r = run_json(spark, file, int(p), out, a.codec, noop)
            except Exception as e:  # a failed run is recorded, the benchmark goes on
                r = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
            r["round"], r["load"] = rnd, loadavg()
            runs[t].append(r)
            extra = f" (schema {r['schema_s']:.1f} s + job {r['write_s']:.1f} s)" if "schema_s" in r else ""
            print(f"round {rnd + 1} {t}: " + (f"{r['wall_s']:.1f} s{extra}, {r.get('rss_mb', 0):.0f} MB, "
                                               f"{r.get('rows')} rows x {r.get('columns')} cols, load {r['load']}"
                                               if r["ok"] else f"failed: {r['error']}"), file=sys.stderr)
            shutil.rmtree(scratch, ignore_errors=True)
            # The raw runs so far, so an interrupted benchmark still leaves its numbers.
            base.with_suffix(".json").write_text(json.dumps({"runs": runs, "args": sys.argv}, indent=1))
    loads.append(loadavg())
    spark.stop()
    summ = {t: summarize(runs[t], nbytes) for t in tools}
    text = report(a, file, nbytes, lines, tools, summ, loads, versions(a.flatfhir), started)
    print(text)
    base.with_suffix(".md").write_text(text)
    base.with_suffix(".json").write_text(json.dumps({"runs": runs, "summary": summ, "args": sys.argv}, indent=1))
    print(f"written: {base}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()
